import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';
import { runSipp } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sip-100rel-'));
  writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 2000));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const NUMS = { FROM: '0788123456', TO: '0700000001' };

describe.each(SIP_ENGINES)('RFC 3262 against sipp (real gateway, sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);
  for (const rel of ['Require: 100rel', 'Supported: 100rel, timer']) {
    it(`${rel}: reliable 180, PRACK answered, the 200 only after the PRACK, then audio`, async () => {
      const h = await sip.start();
      const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
      const res = await runSipp({
        scenario: 'uac-100rel.xml',
        target: `127.0.0.1:${h.port}`,
        vars: { ...NUMS, REL: rel, PRACK_DELAY: '1200', PCAP: join(dir, 'pcma-1000.pcap') },
      });
      expect(res.code, res.errors + res.stderr).toBe(0);
      // The 180 was retransmitted while sipp held its PRACK back, and nothing answered the INVITE before it.
      const log = res.messages;
      expect((log.match(/SIP\/2\.0 180 /g) ?? []).length).toBeGreaterThanOrEqual(2);
      const prackAt = log.indexOf('PRACK sip:');
      const okAt = log.search(/SIP\/2\.0 200 OK[\s\S]*?CSeq: 1 INVITE/);
      expect(prackAt).toBeGreaterThan(0);
      expect(okAt).toBeGreaterThan(prackAt);
      const call = await created;
      await waitFor(() => call.ended, 3000, 'call end');
      expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
      const heard = h.sessions.get(call.id)!.heardPcm(10);
      expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
    });
  }
});
