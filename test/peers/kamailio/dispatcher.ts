import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { freeUdpPort, kamailioModuleDir, startKamailio } from './process.js';

/** The shipped config, run as is: the test fills its defines (listen, lists, probe interval). */
const SHIPPED_CFG = join(import.meta.dirname, '../../../config/kamailio/kamailio.cfg');

export interface KamailioDispatcher {
  port: number;
  /** Call-ID → the gateway port each INVITE was dispatched (or failed over) to, last one wins. */
  dispatched(): Map<string, number>;
  log(): string;
  stop(): Promise<void>;
}

/**
 * config/kamailio/kamailio.cfg dispatching to `gateways` (host:port). `carriers`: address.list lines
 * (address → trunk tag); by default carriers are allowed from 127.0.0.1 as mtn-rwanda.
 */
export async function startDispatcher(
  gateways: string[],
  pingSec = 1,
  carriers: { address: string; trunk: string }[] = [{ address: '127.0.0.1', trunk: 'mtn-rwanda' }],
): Promise<KamailioDispatcher> {
  const mpath = kamailioModuleDir('dispatcher.so');
  const port = await freeUdpPort();
  const k = await startKamailio({
    port,
    ready: (status) => status.startsWith('SIP/2.0 200'),
    prepare: (dir) => {
      writeFileSync(join(dir, 'dispatcher.list'), gateways.map((g) => `1 sip:${g} 0 0\n`).join(''));
      writeFileSync(join(dir, 'address.list'), carriers.map((c) => `1 ${c.address} 32 0 ${c.trunk}\n`).join(''));
    },
    args: (dir) => [
      '-f',
      SHIPPED_CFG,
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
  });
  const out = k.log;
  return {
    port,
    log: out,
    dispatched: () => {
      const m = new Map<string, number>();
      for (const x of out().matchAll(/(?:DISPATCH|FAILOVER) (\S+) .*?to sip:[^:]+:(\d+)/g)) m.set(x[1]!, Number(x[2]));
      return m;
    },
    stop: k.stop,
  };
}
