import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { SIP_ENGINES, type SipEngineFixture, useSipEngine } from '../peers/sip/engines.js';
import { runSipp } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';

let dir: string;
let pcap: string;
const pcapAt = (ptime: number) => join(dir, `pcma-1000-${ptime}ms.pcap`);
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sip-pcap-'));
  pcap = join(dir, 'pcma-1000.pcap');
  writePcap(pcap, toneRtp('PCMA', 1000, 1500));
  for (const ptime of [10, 30, 40]) writePcap(pcapAt(ptime), toneRtp('PCMA', 1000, 1500, 8000, ptime));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A sipp call with these m-lines; the 200's body must match `expect`; the audio stream carries a tone. */
async function multiLineCall(sip: SipEngineFixture, media: string[], expectShape: string, audio = pcap): Promise<Call> {
  const h = await sip.start();
  const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
  const res = await runSipp({
    scenario: 'uac-mlines.xml',
    target: `127.0.0.1:${h.port}`,
    vars: { MEDIA: media.join('\n      '), EXPECT: expectShape, PCAP: audio },
  });
  expect(res.code, res.errors + res.stderr + res.messages.slice(-3000)).toBe(0);
  const call = await created;
  await waitFor(() => call.ended, 3000, 'call end');
  expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
  const heard = h.sessions.get(call.id)!.heardPcm(10);
  expect(Math.abs(dominantFrequency(heard, 8000) - 1000)).toBeLessThan(20);
  return call;
}

describe.each(SIP_ENGINES)('SDP answer shape against sipp (RFC 3264 §6) (sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);
  it('audio+video offer: the answer has both m-lines in order, video refused with port 0; audio flows', async () => {
    await multiLineCall(
      sip,
      [
        'm=audio [media_port] RTP/AVP 8 101',
        'a=rtpmap:8 PCMA/8000',
        'a=rtpmap:101 telephone-event/8000',
        'm=video [media_port+2] RTP/AVP 96',
        'a=rtpmap:96 H264/90000',
      ],
      'm=audio [1-9][0-9]* RTP/AVP 8 101(.|\r|\n)*m=video 0 RTP/AVP 96',
    );
  });

  it('T.38 image line first, then audio: image refused in place (port 0), audio answered', async () => {
    await multiLineCall(
      sip,
      [
        'm=image [media_port+2] udptl t38',
        'a=T38FaxVersion:0',
        'm=audio [media_port] RTP/AVP 8',
        'a=rtpmap:8 PCMA/8000',
      ],
      'm=image 0 udptl t38(.|\r|\n)*m=audio [1-9][0-9]* RTP/AVP 8',
    );
  });
});

describe.each(SIP_ENGINES)('packetisation against sipp (sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);
  it.each([10, 30, 40])(
    'a=ptime:%i from sipp: answered with that ptime, and its packets reach the AI as the tone',
    async (ptime) => {
      await multiLineCall(
        sip,
        ['m=audio [media_port] RTP/AVP 8', 'a=rtpmap:8 PCMA/8000', `a=ptime:${ptime}`],
        `a=ptime:${ptime}`,
        pcapAt(ptime),
      );
    },
  );
});
