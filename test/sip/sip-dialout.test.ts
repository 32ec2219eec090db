import { describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { DialOutLeg } from '../../src/sip/dial-out-leg.js';
import { RtpLeg } from '../../src/sip/rtp-leg.js';
import { dominantFrequency, tone, loudestToneDb } from '../support/audio.js';
import { api, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { freeSipPort } from '../support/free-ports.js';
import { RtpToneEndpoint } from '../peers/openai-sip/sip-peer.js';
import { answerWithBaresip } from '../peers/sip/baresip.js';
import { SIP_ENGINES, useSipEngine } from '../peers/sip/engines.js';
import { sippPhone, type SipHarness } from '../peers/sip/harness.js';
import { udpBound } from '../support/udp.js';

/**
 * Outbound SIP against stacks we did not write (issue 20): the API's dial-out (`POST /v1/calls
 * {front: sip}`) answered by sipp as a UAS and by baresip, on both engines. The gateway's AI plays
 * 440 Hz; the called party sends 700 Hz (baresip: 1 kHz); both directions are frequency-checked.
 */

/** A trunk whose calls go to a phone on `port` (numbers as the Request-URI's user part). */
const labTrunk = (port: number) => ({
  name: 'lab',
  allow: ['127.0.0.2/32'],
  countryCode: '250',
  nationalPrefix: '0',
  dialUri: `sip:127.0.0.1:${port}`,
});

const released = (h: SipHarness) =>
  waitFor(() => h.front.ports.used === 0 && h.front.dialer!.activeCount === 0, 3000, 'ports released');

describe.each(SIP_ENGINES)('dial-out answered by independent SIP stacks (sip.engine $engine)', ({ engine }) => {
  const sip = useSipEngine(engine);

  it('sipp UAS answers POST /v1/calls: 440 Hz reaches the phone, its 700 Hz reaches the AI, DELETE sends BYE', async () => {
    const phonePort = await freeSipPort();
    const media = new RtpToneEndpoint(700);
    const mediaPort = await media.start();
    try {
      const h = await sip.start({ config: { api: { token: TEST_TOKEN } }, trunks: [labTrunk(phonePort)] });
      expect(h.gw.ctx.legDialer).toBe(h.front.dialer);
      const { sipp } = await sippPhone('uas-answer-media.xml', phonePort, { vars: { MEDIA_PORT: String(mediaPort) } });
      const call = api(h.gw);
      const placed = await call('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'lab' });
      expect(placed.status, JSON.stringify(placed.body)).toBe(201);
      const c: Call = h.gw.ctx.registry.get(placed.body.id as string)!;
      expect(c.info).toMatchObject({ front: 'sip', direction: 'outbound', trunk: 'lab', to: '+250788123456' });
      await waitFor(() => c.state === 'bridged', 10_000, 'outbound call bridged');
      // The phone's RTP goes to the port the gateway offered (the call's RTP leg).
      const leg = c.media!.bridge.leg;
      if (!(leg instanceof RtpLeg || leg instanceof DialOutLeg)) throw new Error('the outbound call has no RTP leg');
      media.setRemote('127.0.0.1', leg.localPort, 'PCMA', 8);
      media.startSending();
      await waitFor(() => media.received.length >= 75, 10_000, '1.5 s of the AI at the phone');
      await waitFor(() => h.sessions.get(c.id)!.heardPcm(10).length >= 12_000, 10_000, '1.5 s of the phone at the AI');

      const atPhone = media.heard(10);
      expect(Math.abs(dominantFrequency(atPhone, 8000) - 440) / 440).toBeLessThan(0.02);
      expect(loudestToneDb(atPhone, 8000, 440)).toBeGreaterThan(-20);
      const atAi = h.sessions.get(c.id)!.heardPcm(10);
      expect(Math.abs(dominantFrequency(atAi, 8000) - 700) / 700).toBeLessThan(0.02);
      expect(loudestToneDb(atAi, 8000, 700)).toBeGreaterThan(-20);

      const hung = await call('DELETE', `/v1/calls/${c.id}`, { reason: 'test over' });
      expect(hung.status).toBe(200);
      const res = await sipp;
      expect(res.code, res.errors + res.stderr).toBe(0);
      // The INVITE went to the trunk's dialUri with the number as user part; the BYE to sipp's Contact.
      expect(res.messages).toMatch(new RegExp(`INVITE sip:\\+250788123456@127\\.0\\.0\\.1:${phonePort} SIP/2\\.0`));
      expect(res.messages).toMatch(/BYE sip:sipp@127\.0\.0\.1/);
      expect(c.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
      await released(h);
    } finally {
      media.close();
    }
  });

  it('sipp UAS refuses one dial-out with 486 and lets another ring until DELETE CANCELs it', async () => {
    const phonePort = await freeSipPort();
    const h = await sip.start({ config: { api: { token: TEST_TOKEN } }, trunks: [labTrunk(phonePort)] });
    const { sipp } = await sippPhone('uas-busy-then-ring.xml', phonePort, { calls: 2 });
    const call = api(h.gw);
    const busy = await call('POST', '/v1/calls', { front: 'sip', to: '+250788000486' });
    expect(busy.status, JSON.stringify(busy.body)).toBe(201);
    const b = h.gw.ctx.registry.get(busy.body.id as string);
    await waitFor(() => !b || b.ended, 5000, 'busy call ended');
    const rec = await call('GET', `/v1/calls/${busy.body.id as string}`);
    expect(rec.body.endReason).toMatchObject({ by: 'remote', cause: 'rejected' });
    expect((rec.body.endReason as { detail?: string }).detail).toMatch(/486 Busy Here/);

    const ringing = await call('POST', '/v1/calls', { front: 'sip', to: '+250788000001' });
    const r = h.gw.ctx.registry.get(ringing.body.id as string)!;
    await waitFor(() => r.state === 'ringing', 5000, '180 from the phone');
    await call('DELETE', `/v1/calls/${r.id}`, {});
    const res = await sipp;
    expect(res.code, res.errors + res.stderr).toBe(0);
    expect(res.messages).toMatch(/CANCEL sip:\+250788000001@/);
    expect(r.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
    await released(h);
  });

  it('baresip auto-answers a dial-out: it hears the AI’s 440 Hz, the AI hears its 1 kHz; DELETE hangs it up', async () => {
    const phonePort = await freeSipPort();
    const h = await sip.start({ config: { api: { token: TEST_TOKEN } }, trunks: [labTrunk(phonePort)] });
    const phone = answerWithBaresip({
      user: '+250788123456',
      port: phonePort,
      source: tone(1000, 8000, 8000),
      seconds: 8,
    });
    await udpBound(phonePort);
    const call = api(h.gw);
    const placed = await call('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'lab' });
    expect(placed.status, JSON.stringify(placed.body)).toBe(201);
    const c: Call = h.gw.ctx.registry.get(placed.body.id as string)!;
    await waitFor(() => c.state === 'bridged', 10_000, 'baresip answered');
    await waitFor(
      () => h.sessions.get(c.id)!.heardPcm(25).length >= 16_000,
      10_000,
      '2 s of the phone at the AI',
    ).catch(async (e: unknown) => {
      console.log((await phone).log);
      throw e;
    });
    await call('DELETE', `/v1/calls/${c.id}`, {});
    const run = await phone;
    expect(run.log).toMatch(/Call answered|call established/i);
    expect(c.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });

    const atAi = h.sessions.get(c.id)!.heardPcm(25);
    expect(Math.abs(dominantFrequency(atAi, 8000) - 1000) / 1000).toBeLessThan(0.02);
    expect(loudestToneDb(atAi, 8000, 1000)).toBeGreaterThan(-20);
    const atPhone = run.heard.subarray(4000);
    expect(atPhone.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(atPhone, 8000) - 440) / 440).toBeLessThan(0.02);
    expect(loudestToneDb(atPhone, 8000, 440)).toBeGreaterThan(-20);
    await released(h);
  });
});
