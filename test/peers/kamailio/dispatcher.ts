import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const MODULE_DIRS = [
  '/usr/lib/x86_64-linux-gnu/kamailio/modules',
  '/usr/lib/aarch64-linux-gnu/kamailio/modules',
  '/usr/lib/kamailio/modules',
];
/** The shipped config, run as is: the test fills its defines (listen, lists, probe interval). */
const SHIPPED_CFG = join(import.meta.dirname, '../../../config/kamailio/kamailio.cfg');

export interface KamailioDispatcher {
  port: number;
  /** Call-ID → the gateway port each INVITE was dispatched (or failed over) to, last one wins. */
  dispatched(): Map<string, number>;
  log(): string;
  stop(): Promise<void>;
}

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** An OPTIONS to the proxy itself is answered 200 once its workers run. */
async function answersOptions(port: number): Promise<boolean> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const id = `probe-${Date.now()}`;
  const msg = [
    `OPTIONS sip:127.0.0.1:${port} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${s.address().port};branch=z9hG4bK${id}`,
    'From: <sip:probe@127.0.0.1>;tag=probe',
    'To: <sip:127.0.0.1>',
    `Call-ID: ${id}@127.0.0.1`,
    'CSeq: 1 OPTIONS',
    'Max-Forwards: 70',
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  try {
    return await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 300);
      s.once('message', (m) => {
        clearTimeout(t);
        resolve(m.toString().startsWith('SIP/2.0 200'));
      });
      s.send(msg, port, '127.0.0.1');
    });
  } finally {
    s.close();
  }
}

/** config/kamailio/kamailio.cfg dispatching to `gateways` (host:port), carriers allowed from 127.0.0.1. */
export async function startDispatcher(gateways: string[], pingSec = 1): Promise<KamailioDispatcher> {
  const mpath = MODULE_DIRS.find((d) => existsSync(join(d, 'dispatcher.so')));
  if (!mpath) throw new Error('kamailio modules not found (apt-get install kamailio)');
  const dir = mkdtempSync(join(tmpdir(), 'kamailio-ds-'));
  const port = await freeUdpPort();
  writeFileSync(join(dir, 'dispatcher.list'), gateways.map((g) => `1 sip:${g} 0 0\n`).join(''));
  writeFileSync(join(dir, 'address.list'), '1 127.0.0.1 32 0 mtn-rwanda\n');
  let out = '';
  const child: ChildProcess = spawn(
    'kamailio',
    [
      '-f',
      SHIPPED_CFG,
      '-DD',
      '-E',
      '-Y',
      dir,
      '-P',
      join(dir, 'kamailio.pid'),
      '-m',
      '64',
      '-M',
      '8',
      '-A',
      `SIP_LISTEN=udp:127.0.0.1:${port}`,
      '-A',
      `DS_LIST="${join(dir, 'dispatcher.list')}"`,
      '-A',
      `ADDRESS_LIST="${join(dir, 'address.list')}"`,
      '-A',
      `MODULE_PATH="${mpath}/"`,
      '-A',
      `DS_PING_SEC=${pingSec}`,
      // One UDP worker: with several, a 180 and the 200 right behind it can be relayed out of order.
      '-A',
      'WORKERS=1',
    ],
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
  while (!(await answersOptions(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await stop();
      throw new Error(`kamailio did not start: ${out.slice(-2000)}`);
    }
  }
  return {
    port,
    log: () => out,
    dispatched: () => {
      const m = new Map<string, number>();
      for (const x of out.matchAll(/(?:DISPATCH|FAILOVER) (\S+) .*?to sip:[^:]+:(\d+)/g)) m.set(x[1]!, Number(x[2]));
      return m;
    },
    stop,
  };
}
