import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MODULE_DIRS = [
  '/usr/lib/x86_64-linux-gnu/kamailio/modules',
  '/usr/lib/aarch64-linux-gnu/kamailio/modules',
  '/usr/lib/kamailio/modules',
];

/** Debian's kamailio as a record-routing proxy in front of the gateway (see kamailio-proxy.cfg). */
export interface KamailioProxy {
  port: number;
  /** Everything kamailio logged (RR-CHECK lines: one per request it received). */
  log(): string;
  /** The requests it received: method, source port, Route header value. */
  requests(): { method: string; fromPort: number; ruri: string; route: string; inDialog: boolean }[];
  stop(): Promise<void>;
}

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** Whether something answers SIP on the port (OPTIONS; kamailio forwards it to the gateway). */
async function answers(port: number, timeoutMs: number): Promise<boolean> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const me = s.address().port;
  const msg = [
    `OPTIONS sip:probe@127.0.0.1:${port} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${me};branch=z9hG4bKprobe${Date.now()}`,
    'From: <sip:probe@127.0.0.1>;tag=probe',
    'To: <sip:probe@127.0.0.1>',
    `Call-ID: probe-${Date.now()}@127.0.0.1`,
    'CSeq: 1 OPTIONS',
    'Max-Forwards: 70',
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  try {
    return await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), timeoutMs);
      s.once('message', () => {
        clearTimeout(t);
        resolve(true);
      });
      s.send(msg, port, '127.0.0.1');
    });
  } finally {
    s.close();
  }
}

/** Start kamailio on a free port, relaying initial requests to `gateway` (host:port); stopped by pid. */
export async function startKamailioProxy(gateway: string): Promise<KamailioProxy> {
  const mpath = MODULE_DIRS.find((d) => existsSync(join(d, 'rr.so')));
  if (!mpath) throw new Error('kamailio modules not found (apt-get install kamailio)');
  const dir = mkdtempSync(join(tmpdir(), 'kamailio-'));
  const port = await freeUdpPort();
  const cfg = readFileSync(join(import.meta.dirname, 'kamailio-proxy.cfg'), 'utf8')
    .replaceAll('@@PORT@@', String(port))
    .replaceAll('@@GATEWAY@@', gateway)
    .replaceAll('@@MPATH@@', `${mpath}/`);
  writeFileSync(join(dir, 'kamailio.cfg'), cfg);
  let out = '';
  const child: ChildProcess = spawn(
    'kamailio',
    ['-f', join(dir, 'kamailio.cfg'), '-DD', '-E', '-Y', dir, '-P', join(dir, 'kamailio.pid'), '-m', '32', '-M', '4'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 3000);
      await exited;
      clearTimeout(t);
    }
    rmSync(dir, { recursive: true, force: true });
  };
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`kamailio exited at start: ${out.slice(-2000)}`);
    }
    if (await answers(port, 300)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`kamailio did not answer on ${port}: ${out.slice(-2000)}`);
    }
  }
  return {
    port,
    log: () => out,
    requests: () =>
      [...out.matchAll(/RR-CHECK (\S+) from=[^:]+:(\d+) ruri=(\S+) route=(.*?) totag=(\S*)$/gm)].map((m) => ({
        method: m[1]!,
        fromPort: Number(m[2]),
        ruri: m[3]!,
        route: m[4] === '<null>' ? '' : m[4]!,
        inDialog: m[5] !== '' && m[5] !== '<null>',
      })),
    stop,
  };
}
