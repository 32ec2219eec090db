import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freeUdpPort, kamailioModuleDir, startKamailio } from '../kamailio/process.js';

/** Debian's kamailio as a record-routing proxy in front of the gateway (see kamailio-proxy.cfg). */
export interface KamailioProxy {
  port: number;
  /** Everything kamailio logged (RR-CHECK lines: one per request it received). */
  log(): string;
  /** The requests it received: method, source port, Route header value. */
  requests(): { method: string; fromPort: number; ruri: string; route: string; inDialog: boolean }[];
  stop(): Promise<void>;
}

/** Start kamailio on a free port, relaying initial requests to `gateway` (host:port); stopped by pid. */
export async function startKamailioProxy(gateway: string): Promise<KamailioProxy> {
  const mpath = kamailioModuleDir('rr.so');
  const port = await freeUdpPort();
  const cfg = readFileSync(join(import.meta.dirname, 'kamailio-proxy.cfg'), 'utf8')
    .replaceAll('@@PORT@@', String(port))
    .replaceAll('@@GATEWAY@@', gateway)
    .replaceAll('@@MPATH@@', `${mpath}/`);
  // Any answer will do: kamailio relays the probe to the gateway, which answers it.
  const k = await startKamailio({
    port,
    ruri: `sip:probe@127.0.0.1:${port}`,
    prepare: (dir) => writeFileSync(join(dir, 'kamailio.cfg'), cfg),
    args: (dir) => ['-f', join(dir, 'kamailio.cfg'), '-m', '32', '-M', '4'],
  });
  const out = k.log;
  return {
    port,
    log: out,
    requests: () =>
      [...out().matchAll(/RR-CHECK (\S+) from=[^:]+:(\d+) ruri=(\S+) route=(.*?) totag=(\S*)$/gm)].map((m) => ({
        method: m[1]!,
        fromPort: Number(m[2]),
        ruri: m[3]!,
        route: m[4] === '<null>' ? '' : m[4]!,
        inDialog: m[5] !== '' && m[5] !== '<null>',
      })),
    stop: k.stop,
  };
}
