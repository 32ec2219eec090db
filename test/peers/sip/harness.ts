import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll } from 'vitest';
import type { AiBackend, AiSessionOptions } from '../../../src/ai/session.js';
import { parseConfig } from '../../../src/config/load.js';
import { l16, type AudioFormat } from '../../../src/core/audio/format.js';
import type { Call } from '../../../src/core/call.js';
import { testLogger } from '../../../src/core/logger.js';
import { buildFronts } from '../../../src/fronts.js';
import { Gateway } from '../../../src/gateway.js';
import { SipFront } from '../../../src/sip/front.js';
import { tagOf, type SipMessage } from '../../../src/sip/message.js';
import { ToneAi } from '../tone-ai.js';
import { newId, type RawSipPeer, request, sdpOffer } from './udp-peer.js';
import { loopbackSipConfig } from '../../support/gateway.js';
import { leasePortRange, releasePortRange } from '../../support/ports.js';
import { udpBound } from '../../support/udp.js';

export { ToneAi };

export interface SipHarness {
  gw: Gateway;
  front: SipFront;
  port: number;
  sessions: Map<string, ToneAi>;
  stop(): Promise<void>;
}

export interface SipHarnessOptions {
  trunks?: Record<string, unknown>[];
  sip?: Record<string, unknown>;
  aiFreq?: number;
  aiFormat?: AudioFormat;
  aiStartDelayMs?: number;
  /** Called with each new session (e.g. to end the call from the AI side). */
  onSession?: (s: ToneAi, callId: string) => void;
  nonceTtlMs?: number;
  /** Extra routes (e.g. a realtime route to a RealtimeTestServer) and routing; `local` stays the tone AI. */
  routes?: Record<string, unknown>;
  routing?: Record<string, unknown>;
  /** Shorthand for routing: { default } when `routing` is not given. */
  defaultRoute?: string;
  /** Further top-level config sections (e.g. api: { token }, limits, http). */
  config?: Record<string, unknown>;
}

/** The real Gateway (parseConfig + buildFronts) with the SIP front on a free port and a tone AI. */
export async function startSipHarness(opts: SipHarnessOptions = {}): Promise<SipHarness> {
  // Leased, not random: another test process on the machine may be using any fixed or random range.
  const rtpRange = leasePortRange(200);
  const rtpMin = rtpRange[0];
  const config = parseConfig(
    {
      ...loopbackSipConfig(rtpMin, rtpMin + 199, { rtpTimeoutSec: 5, ...opts.sip }),
      trunks: opts.trunks ?? [
        { name: 'mtn-rwanda', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0', maxCalls: 60 },
      ],
      routes: { local: { kind: 'local', greeting: 'Hello caller.' }, ...opts.routes },
      routing: opts.routing ?? { default: opts.defaultRoute ?? 'local' },
      ...opts.config,
    },
    {},
  );
  const gw = new Gateway(config, testLogger());
  const sessions = new Map<string, ToneAi>();
  const backend: AiBackend = {
    kind: 'local',
    open(o: AiSessionOptions) {
      const s = new ToneAi(opts.aiFreq ?? 440, {
        format: opts.aiFormat ?? l16(8000),
        control: o.control,
        startDelayMs: opts.aiStartDelayMs,
      });
      sessions.set(o.callId, s);
      opts.onSession?.(s, o.callId);
      return s;
    },
  };
  gw.ctx.backends.register('local', () => backend);
  const fronts = buildFronts(gw.ctx);
  for (const f of fronts) gw.addFront(f);
  const front = fronts.find((f): f is SipFront => f instanceof SipFront);
  if (!front) throw new Error('buildFronts did not return a SipFront');
  await gw.start();
  const port = (front.engine as unknown as { port: number }).port;
  return {
    gw,
    front,
    port,
    sessions,
    async stop() {
      await gw.stop('test_done', 0);
      releasePortRange(rtpRange);
    },
  };
}

export interface SippResult {
  code: number;
  stdout: string;
  stderr: string;
  messages: string;
  errors: string;
}

/**
 * Run sipp once with a scenario from test/sipp (placeholders `@@NAME@@` filled from `vars`),
 * in its own temp dir, with a hard timeout.
 */
export async function runSipp(opts: {
  scenario: string;
  target: string;
  vars?: Record<string, string>;
  localIp?: string;
  mediaPort?: number;
  args?: string[];
  timeoutSec?: number;
  /** Calls to place (-m); default 1. */
  calls?: number;
}): Promise<SippResult> {
  const dir = mkdtempSync(join(tmpdir(), 'sipp-'));
  // sipp's media socket(s) (-mp and the ports beside it) in a leased range, freed after the run.
  const mediaRange = opts.mediaPort === undefined ? leasePortRange(100) : undefined;
  try {
    let xml = readFileSync(join(import.meta.dirname, '../../sipp', opts.scenario), 'utf8');
    for (const [k, v] of Object.entries(opts.vars ?? {})) xml = xml.replaceAll(`@@${k}@@`, v);
    const sf = join(dir, opts.scenario);
    writeFileSync(sf, xml);
    const timeout = opts.timeoutSec ?? 20;
    const args = [
      '-sf',
      sf,
      '-m',
      String(opts.calls ?? 1),
      '-i',
      opts.localIp ?? '127.0.0.1',
      '-p',
      '0',
      '-mi',
      opts.localIp ?? '127.0.0.1',
      '-mp',
      String(opts.mediaPort ?? mediaRange![0]),
      '-nostdin',
      '-timeout',
      `${timeout}s`,
      '-timeout_error',
      '-trace_msg',
      '-message_file',
      join(dir, 'messages.log'),
      '-trace_err',
      '-error_file',
      join(dir, 'errors.log'),
      ...(opts.args ?? []),
      opts.target,
    ];
    const child = spawn('sipp', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number>((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), (timeout + 10) * 1000);
      child.on('exit', (c) => {
        clearTimeout(kill);
        resolve(c ?? -1);
      });
    });
    const read = (f: string) => {
      try {
        return readFileSync(join(dir, f), 'utf8');
      } catch {
        return '';
      }
    };
    return { code, stdout, stderr, messages: read('messages.log'), errors: read('errors.log') };
  } finally {
    if (mediaRange) releasePortRange(mediaRange);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * sipp as the called phone: UAS `scenario` listening on `port`. Resolves once it listens, with its
 * run in `sipp` (wrapped, so that awaiting the phone does not await the run).
 */
export async function sippPhone(
  scenario: string,
  port: number,
  opts: { vars?: Record<string, string>; calls?: number } = {},
): Promise<{ sipp: Promise<SippResult> }> {
  const args = ['-p', String(port)];
  // The target is unused by a UAS.
  const sipp = runSipp({ scenario, target: '127.0.0.1:5060', args, timeoutSec: 30, ...opts });
  await udpBound(port);
  return { sipp };
}

/** The next call the gateway creates (register before the INVITE goes out). */
export const nextCall = (h: { gw: Gateway }): Promise<Call> =>
  new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));

/**
 * A call from a raw UDP carrier peer: INVITE (an audio offer on `rtpPort`, plus `extra` headers),
 * the 200, its ACK; returns what a test needs to continue the dialog.
 */
export async function rawPeerCall(
  h: { gw: Gateway; port: number },
  peer: RawSipPeer,
  opts: { rtpPort: number; extra?: string[] },
): Promise<{ callId: string; toTag: string; ok: SipMessage; call: Call }> {
  const callId = newId();
  const created = nextCall(h);
  const sdp = sdpOffer(opts.rtpPort);
  peer.send(request({ callId, localPort: peer.port, targetPort: h.port, sdp, extra: opts.extra }), h.port);
  const ok = await peer.waitFor(
    (m) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId,
    3000,
    '200',
  );
  const toTag = tagOf(ok.headers.get('to'))!;
  peer.send(request({ callId, method: 'ACK', toTag, localPort: peer.port, targetPort: h.port }), h.port);
  return { callId, toTag, ok, call: await created };
}

/** Where sipp sends its INVITEs for a harness. */
export const sippTarget = (h: SipHarness): string => `127.0.0.1:${h.port}`;

/** Caller and called numbers the sipp scenarios use (national format on the default MTN trunk). */
export const SIPP_NUMS = { FROM: '0788123456', TO: '0700000001' };

/**
 * A temp dir for the file's sipp media, filled before its tests and removed after them (vitest
 * beforeAll/afterAll); returns the dir's path getter.
 */
export function usePcapDir(fill: (dir: string) => void): () => string {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'sip-pcap-'));
    fill(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  return () => dir;
}

/**
 * A carrier call from sipp to the harness: `scenario` playing `pcap`, SIPP_NUMS as numbers. Resolves
 * once the gateway has the Call, with sipp's run still going (await `sipp` for its result).
 */
export async function sippCall(
  h: SipHarness,
  scenario: string,
  pcap: string,
  extra: Record<string, string> = {},
): Promise<{ call: Call; sipp: Promise<SippResult> }> {
  const created = nextCall(h);
  const sipp = runSipp({ scenario, target: sippTarget(h), vars: { ...SIPP_NUMS, PCAP: pcap, ...extra } });
  return { call: await created, sipp };
}
