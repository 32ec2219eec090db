import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { tagOf } from '../../src/sip/message.js';
import { newId, request, sdpOffer, type RawSipPeer } from '../peers/sip/udp-peer.js';
import { freeTcpPort, freeUdpPort } from './free-ports.js';
import { waitFor } from './gateway.js';
import { leasePortRange } from './ports.js';

export interface GatewayProcess {
  proc: ChildProcess;
  httpPort: number;
  sipPort: number;
  /** The SQLite call-record file, to read after the process is gone. */
  records: string;
  /** The exit code (null on a signal), watched from the spawn on. */
  exited: Promise<number | null>;
  /** stdout and stderr so far. */
  log(): string;
}

/**
 * The gateway as `npm start` runs it (env config, a fresh records file unless `records` is given),
 * resolved once it logs "gateway ready". `preload` adds `--import` modules (a test hook), `env` more
 * GW__ keys (given the ports); a start that never gets ready is killed before the error is thrown.
 */
export async function startGatewayProcess(o: {
  token: string;
  drainSec?: number;
  preload?: string[];
  records?: string;
  env?: (ports: { httpPort: number; sipPort: number }) => Record<string, string>;
  /** A cold `tsx` start of the whole gateway is slow on a loaded box. */
  readyMs?: number;
}): Promise<GatewayProcess> {
  const [httpPort, sipPort] = await Promise.all([freeTcpPort(), freeUdpPort()]);
  const [rtpBase] = leasePortRange(100);
  const records = o.records ?? join(mkdtempSync(join(tmpdir(), 'gw-proc-')), 'calls.sqlite');
  let out = '';
  const imports = ['tsx', ...(o.preload ?? [])].flatMap((m) => ['--import', m]);
  const proc = spawn(process.execPath, [...imports, 'src/main.ts'], {
    env: {
      ...process.env,
      LOG_LEVEL: 'info',
      API_TOKEN: o.token,
      GW__HTTP__HOST: '127.0.0.1',
      GW__HTTP__PORT: String(httpPort),
      GW__SIP__HOST: '127.0.0.1',
      GW__SIP__PORT: String(sipPort),
      GW__SIP__RTP_PORT_MIN: String(rtpBase),
      GW__SIP__RTP_PORT_MAX: String(rtpBase + 99),
      GW__RECORDS__PATH: records,
      ...(o.drainSec !== undefined && { GW__SHUTDOWN__DRAIN_SEC: String(o.drainSec) }),
      ...o.env?.({ httpPort, sipPort }),
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<number | null>((r) => proc.once('exit', (code) => r(code)));
  try {
    await waitFor(
      () => out.includes('gateway ready'),
      o.readyMs ?? 40_000,
      () => `gateway ready log; its output: ${out.slice(-1500)}`,
    );
  } catch (err) {
    proc.kill('SIGKILL');
    throw err;
  }
  return { proc, httpPort, sipPort, records, exited, log: () => out };
}

/** INVITE, 200, ACK from `p`; resolves with the SIP Call-ID once the gateway has taken the ACK. */
export async function placeCall(p: RawSipPeer, sipPort: number, rtpPort: number, timeoutMs: number): Promise<string> {
  const callId = newId();
  p.send(request({ callId, localPort: p.port, targetPort: sipPort, sdp: sdpOffer(rtpPort) }), sipPort);
  const ok = await p.waitFor(
    (m) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId,
    timeoutMs,
    '200',
  );
  p.send(
    request({ callId, method: 'ACK', toTag: tagOf(ok.headers.get('to')), localPort: p.port, targetPort: sipPort }),
    sipPort,
  );
  // Datagrams are handled in order: once an OPTIONS sent after the ACK is answered, the call is confirmed.
  const probe = newId();
  p.send(request({ callId: probe, method: 'OPTIONS', localPort: p.port, targetPort: sipPort }), sipPort);
  await p.waitFor(
    (m) => m.kind === 'response' && m.headers.get('call-id') === probe,
    timeoutMs,
    'OPTIONS after the ACK',
  );
  return callId;
}
