import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
export { freeUdpPort } from '../../support/free-ports.js';

/** Where Debian (and other layouts) install kamailio's modules. */
export const KAMAILIO_MODULE_DIRS = [
  '/usr/lib/x86_64-linux-gnu/kamailio/modules',
  '/usr/lib/aarch64-linux-gnu/kamailio/modules',
  '/usr/lib/kamailio/modules',
];

/** The module directory holding `module` (e.g. 'rr.so'); throws a clear error when kamailio is missing. */
export function kamailioModuleDir(module: string): string {
  const dir = KAMAILIO_MODULE_DIRS.find((d) => existsSync(join(d, module)));
  if (!dir) throw new Error('kamailio modules not found (apt-get install kamailio)');
  return dir;
}

/**
 * One OPTIONS to `ruri` on the port; resolves with the first line of whatever answers within
 * `timeoutMs` (undefined when nothing does).
 */
async function probe(port: number, ruri: string, timeoutMs: number): Promise<string | undefined> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const id = `probe-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
  const msg = [
    `OPTIONS ${ruri} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${s.address().port};branch=z9hG4bK${id}`,
    'From: <sip:probe@127.0.0.1>;tag=probe',
    'To: <sip:probe@127.0.0.1>',
    `Call-ID: ${id}@127.0.0.1`,
    'CSeq: 1 OPTIONS',
    'Max-Forwards: 70',
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  try {
    return await new Promise<string | undefined>((resolve) => {
      const t = setTimeout(() => resolve(undefined), timeoutMs);
      s.once('message', (m) => {
        clearTimeout(t);
        resolve(m.toString().split('\r\n')[0]);
      });
      s.send(msg, port, '127.0.0.1');
    });
  } finally {
    s.close();
  }
}

export interface KamailioProcess {
  dir: string;
  log(): string;
  /** SIGTERM (SIGKILL after 3 s), then the temp dir is removed. */
  stop(): Promise<void>;
}

/**
 * Start `kamailio` in the foreground with a temp dir (`-Y`, pid file) and `args`, and wait until an
 * OPTIONS to `ruri` on `port` gets an answer that `ready` accepts (10 s at most). `prepare` writes
 * the config/list files into the temp dir before the start.
 */
export async function startKamailio(opts: {
  port: number;
  args: (dir: string) => string[];
  prepare?: (dir: string) => void;
  ruri?: string;
  ready?: (statusLine: string) => boolean;
}): Promise<KamailioProcess> {
  const dir = mkdtempSync(join(tmpdir(), 'kamailio-'));
  opts.prepare?.(dir);
  let out = '';
  const child: ChildProcess = spawn(
    'kamailio',
    ['-DD', '-E', '-Y', dir, '-P', join(dir, 'kamailio.pid'), ...opts.args(dir)],
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
  const ruri = opts.ruri ?? `sip:127.0.0.1:${opts.port}`;
  const ready = opts.ready ?? (() => true);
  const deadline = Date.now() + 10_000;
  for (;;) {
    if (child.exitCode !== null) {
      await stop();
      throw new Error(`kamailio exited at start: ${out.slice(-2000)}`);
    }
    const answer = await probe(opts.port, ruri, 300);
    if (answer !== undefined && ready(answer)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(`kamailio did not answer on ${opts.port}: ${out.slice(-2000)}`);
    }
  }
  return { dir, log: () => out, stop };
}
