import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { dominantFrequency } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { SIP_ENGINES, type SipEngineFixture, useSipEngine } from '../peers/sip/engines.js';
import { nextCall, runSipp, type SipHarnessOptions } from '../peers/sip/harness.js';
import { startKamailioProxy, type KamailioProxy } from '../peers/sip/kamailio-proxy.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';

/**
 * Issue 11 deliver 2: a real proxy in the path. Debian's kamailio record-routes every dialog
 * between sipp (the carrier) and the gateway; in-dialog requests in both directions must go
 * through it with Route headers from the route set, and reach the far end without them.
 */
let proxy: KamailioProxy | undefined;
let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sip-kam-'));
  writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 4000));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  await proxy?.stop();
  proxy = undefined;
});

const NUMS = { FROM: '0788123456', TO: '0700000001' };

async function start(sip: SipEngineFixture, opts: SipHarnessOptions = {}) {
  const h = await sip.start(opts);
  proxy = await startKamailioProxy(`127.0.0.1:${h.port}`);
  return { h, proxy };
}

/** The proxy's own Route entry (what record_route() put in the route set). */
const viaProxy = (p: KamailioProxy) => new RegExp(`^<sip:127\\.0\\.0\\.1:${p.port};lr`);

describe.each(SIP_ENGINES)(
  'calls through kamailio as a record-routing proxy (real gateway, sip.engine $engine)',
  ({ engine }) => {
    const sip = useSipEngine(engine);
    it('REFER from the gateway, NOTIFY + re-INVITE + BYE from the carrier: every in-dialog request follows the route set', async () => {
      const { h, proxy } = await start(sip);
      const created = nextCall(h);
      // Held, not fire-and-forget: a REFER that fails fails this test, not a later one.
      const referred = created.then(async (c) => {
        await waitFor(() => !!c.transfer, 3000, 'transfer available');
        await c.transfer!('+250788999000');
      });
      referred.catch(() => undefined); // awaited below, after sipp's verdict
      const res = await runSipp({
        scenario: 'uac-proxy.xml',
        target: `127.0.0.1:${proxy.port}`,
        vars: {
          ...NUMS,
          GW: `127.0.0.1:${h.port}`,
          KPORT: String(proxy.port),
          PAUSE: '1000',
          PCAP: join(dir, 'pcma-1000.pcap'),
        },
      });
      expect(res.code, res.errors + res.stderr + proxy.log().slice(-3000)).toBe(0);
      await referred; // 202 Accepted
      const call = await created;
      await waitFor(() => call.ended, 3000, 'call end');
      expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
      const heard = h.sessions.get(call.id)!.heardPcm(10);
      expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);

      const reqs = proxy.requests().filter((r) => r.method !== 'OPTIONS');
      const fromGateway = reqs.filter((r) => r.fromPort === h.port);
      const fromCarrier = reqs.filter((r) => r.fromPort !== h.port);
      // Gateway → carrier: the REFER went to the proxy with its Route, addressed to sipp's Contact.
      expect(fromGateway.map((r) => r.method)).toEqual(['REFER']);
      expect(fromGateway[0]!.route).toMatch(viaProxy(proxy));
      expect(fromGateway[0]!.ruri).toMatch(/^sip:sipp@127\.0\.0\.1:\d+/);
      // Carrier → gateway: initial INVITE without Route, then every in-dialog request with it.
      expect(fromCarrier.map((r) => r.method)).toEqual(['INVITE', 'ACK', 'NOTIFY', 'INVITE', 'ACK', 'BYE']);
      for (const r of fromCarrier.slice(1)) {
        expect(r.inDialog, r.method).toBe(true);
        expect(r.route, r.method).toMatch(viaProxy(proxy));
        // Our Contact: drachtio-server writes its own, without a user part.
        expect(r.ruri, r.method).toMatch(new RegExp(`^sip:(gateway@)?127\\.0\\.0\\.1:${h.port}`));
      }
      // What reached sipp from the gateway came through the proxy (its Via on top) with no Route left.
      const refer = /REFER sip:sipp@[\s\S]*?\n\n/.exec(res.messages)?.[0] ?? '';
      expect(refer).toMatch(new RegExp(`\\nVia: SIP/2\\.0/UDP 127\\.0\\.0\\.1:${proxy.port};branch=`));
      expect(refer).not.toMatch(/\nRoute:/i);
      await waitFor(() => h.front.ports.used === 0, 3000, 'ports freed');
    });

    it('the gateway hangs up: its BYE follows the route set through the proxy', async () => {
      const { h, proxy } = await start(sip, {
        onSession: (s) =>
          setTimeout(() => {
            s.quiet();
            s.control.hangupAfterPlayout('goodbye');
          }, 1000),
      });
      const created = nextCall(h);
      const res = await runSipp({
        scenario: 'uac-proxy-gw-bye.xml',
        target: `127.0.0.1:${proxy.port}`,
        vars: { ...NUMS, GW: `127.0.0.1:${h.port}`, KPORT: String(proxy.port), PCAP: join(dir, 'pcma-1000.pcap') },
      });
      expect(res.code, res.errors + res.stderr + proxy.log().slice(-3000)).toBe(0);
      const call = await created;
      await waitFor(() => call.ended, 3000, 'call end');
      expect(call.endReason?.by).toBe('ai');
      const bye = proxy.requests().find((r) => r.method === 'BYE');
      expect(bye?.fromPort).toBe(h.port);
      expect(bye?.route).toMatch(viaProxy(proxy));
      expect(res.messages).toMatch(
        new RegExp(`BYE sip:sipp@[^\\n]*\\nVia: SIP/2\\.0/UDP 127\\.0\\.0\\.1:${proxy.port};`),
      );
      await waitFor(() => h.front.ports.used === 0, 3000, 'ports freed');
    });
  },
);
