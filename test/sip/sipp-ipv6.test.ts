import { createSocket } from 'node:dgram';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import type { HangupReason } from '../../src/core/media-leg.js';
import { dominantFrequency } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';
import { runSipp } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';

const hasIpv6Loopback = await new Promise<boolean>((resolve) => {
  const s = createSocket('udp6');
  s.once('error', () => resolve(false));
  s.bind(0, '::1', () => s.close(() => resolve(true)));
});
if (!hasIpv6Loopback) console.log('sipp-ipv6.test: no IPv6 loopback (::1) on this machine: sipp IPv6 call skipped');

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sip-pcap6-'));
  writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 2000));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe.skipIf(!hasIpv6Loopback).each(SIP_ENGINES)(
  'a sipp call over IPv6 (real gateway on ::1, sip.engine $engine)',
  ({ engine }) => {
    const sip = useSipEngine(engine, { drachtio: { ipv6: true } });
    it('INVITE/ACK/BYE over [::1], IN IP6 media: the caller tone reaches the AI and audio flows back', async () => {
      const h = await sip.start({
        sip: { host: '::1', publicAddress6: '::1' },
        trunks: [{ name: 'v6-carrier', allow: ['::1/128'], countryCode: '250', nationalPrefix: '0', maxCalls: 4 }],
      });
      const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
      const done = new Promise<HangupReason>((r) =>
        h.gw.ctx.registry.once('created', (c) => c.once('ended', (reason) => r(reason))),
      );
      const res = await runSipp({
        scenario: 'uac-audio.xml',
        target: `[::1]:${h.port}`,
        localIp: '::1',
        vars: {
          PCAP: join(dir, 'pcma-1000.pcap'),
          PT: '8',
          CODEC: 'PCMA',
          PAUSE: '2500',
          FROM: '0788123456',
          TO: '0700000001',
        },
      });
      expect(res.code, res.errors + res.stderr).toBe(0);
      // The gateway's 200 as sipp saw it: bracketed Contact and the caller's bracketed Via, IN IP6 answer.
      // On drachtio the Contact is drachtio-server's own (its [::1] contact, no user part).
      expect(res.messages).toMatch(
        engine === 'embedded'
          ? /Contact: <sip:gateway@\[::1\]:\d+;transport=udp>/i
          : new RegExp(`Contact: <sip:\\[::1\\]:${h.port}>`, 'i'),
      );
      expect(res.messages).toMatch(/c=IN IP6 ::1/);
      const call = await created;
      expect(await done).toMatchObject({ by: 'remote', cause: 'bye' });
      expect(call.info).toMatchObject({ from: '+250788123456', to: '+250700000001', trunk: 'v6-carrier' });
      const heard = h.sessions.get(call.id)!.heardPcm(10);
      expect(heard.length).toBeGreaterThan(8000);
      expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
      const q = Object.values(call.quality)[0] as { packetsReceived: number; packetsSent: number };
      expect(q.packetsReceived).toBeGreaterThan(80);
      expect(q.packetsSent).toBeGreaterThan(80);
      await waitFor(() => h.front.ports.used === 0 && h.front.activeCount === 0, 3000, 'ports freed');
    });
  },
);
