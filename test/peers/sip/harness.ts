import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AiBackend, AiSession, AiSessionEvents, AiSessionOptions, CallControl } from '../../../src/ai/session.js';
import { parseConfig } from '../../../src/config/load.js';
import { createConverter } from '../../../src/core/audio/converter.js';
import { l16, type AudioFormat } from '../../../src/core/audio/format.js';
import { pcmBuffer, pcmView } from '../../../src/core/audio/level.js';
import { testLogger } from '../../../src/core/logger.js';
import type { PlayedMark } from '../../../src/core/playout.js';
import { TypedEmitter } from '../../../src/core/typed-emitter.js';
import { buildFronts } from '../../../src/fronts.js';
import { Gateway } from '../../../src/gateway.js';
import { SipFront } from '../../../src/sip/front.js';

const LEAD_MS = 200;

/**
 * A test AI: plays a continuous tone and records every caller frame (as PCM) it is given, so a
 * test checks both directions. `format` picks what it asks the bridge for (pcmu = passthrough).
 */
export class ToneAi extends TypedEmitter<AiSessionEvents> implements AiSession {
  readonly heard: Int16Array[] = [];
  private timer: NodeJS.Timeout | undefined;
  private emitted = 0;
  private t0 = 0;
  closedWith: string | undefined;
  private readonly toPcm: ReturnType<typeof createConverter>;
  private readonly fromPcm: ReturnType<typeof createConverter>;

  constructor(
    readonly freq: number,
    readonly inputFormat: AudioFormat,
    readonly control: CallControl,
    private readonly startDelayMs = 0,
  ) {
    super();
    this.toPcm = createConverter(inputFormat, l16(inputFormat.sampleRate));
    this.fromPcm = createConverter(l16(inputFormat.sampleRate), inputFormat);
  }

  get outputFormat(): AudioFormat {
    return this.inputFormat;
  }

  async start(): Promise<void> {
    if (this.startDelayMs) await new Promise((r) => setTimeout(r, this.startDelayMs));
    if (this.closedWith) return;
    this.t0 = performance.now();
    this.emit('ready');
    this.pump();
    this.timer = setInterval(() => this.pump(), 50);
  }

  private pump(): void {
    const rate = this.inputFormat.sampleRate;
    const due = Math.floor(((performance.now() - this.t0 + LEAD_MS) * rate) / 1000 / 160) * 160;
    const n = due - this.emitted;
    if (n <= 0 || this.freq <= 0) return;
    const pcm = new Int16Array(n);
    for (let i = 0; i < n; i++)
      pcm[i] = Math.round(8000 * Math.sin((2 * Math.PI * this.freq * (this.emitted + i)) / rate));
    this.emitted += n;
    const per = (rate / 50) * 2;
    const buf = pcmBuffer(pcm);
    const parts: Buffer[] = [];
    for (let o = 0; o + per <= buf.length; o += per) parts.push(this.fromPcm.convert(buf.subarray(o, o + per)));
    this.emit('audio', Buffer.concat(parts), 'tone');
  }

  /** Stop the tone (so a hangup-after-playout can drain). */
  quiet(): void {
    clearInterval(this.timer);
  }

  sendAudio(frame: Buffer): void {
    this.heard.push(Int16Array.from(pcmView(this.toPcm.convert(frame))));
  }

  playoutCleared(_mark: PlayedMark): void {}

  close(reason: string): Promise<void> {
    clearInterval(this.timer);
    this.closedWith ??= reason;
    this.emit('closed', reason);
    return Promise.resolve();
  }

  heardPcm(skipFrames = 0): Int16Array {
    const parts = this.heard.slice(skipFrames);
    const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
    let o = 0;
    for (const p of parts) {
      out.set(p, o);
      o += p.length;
    }
    return out;
  }
}

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
}

let portBase = 21000 + Math.floor(Math.random() * 200) * 100;

/** The real Gateway (parseConfig + buildFronts) with the SIP front on a free port and a tone AI. */
export async function startSipHarness(opts: SipHarnessOptions = {}): Promise<SipHarness> {
  const rtpMin = portBase;
  portBase += 200;
  const config = parseConfig(
    {
      http: { host: '127.0.0.1', port: 0 },
      records: { path: ':memory:' },
      shutdown: { drainSec: 0 },
      sip: {
        enabled: true,
        host: '127.0.0.1',
        port: 0,
        publicAddress: '127.0.0.1',
        rtpPortMin: rtpMin,
        rtpPortMax: rtpMin + 199,
        rtpTimeoutSec: 5,
        ...opts.sip,
      },
      trunks: opts.trunks ?? [
        { name: 'mtn-rwanda', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0', maxCalls: 60 },
      ],
      routes: { local: { kind: 'local', greeting: 'Hello caller.' } },
    },
    {},
  );
  const gw = new Gateway(config, testLogger());
  const sessions = new Map<string, ToneAi>();
  const backend: AiBackend = {
    kind: 'local',
    open(o: AiSessionOptions) {
      const s = new ToneAi(opts.aiFreq ?? 440, opts.aiFormat ?? l16(8000), o.control, opts.aiStartDelayMs);
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
      String(opts.mediaPort ?? 16000 + Math.floor(Math.random() * 4000) * 2),
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
    rmSync(dir, { recursive: true, force: true });
  }
}
