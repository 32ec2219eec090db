import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { OPUS_48K, PCMU_8K } from '../../src/core/audio/format.js';
import { parseConfig } from '../../src/config/load.js';
import type { Gateway } from '../../src/gateway.js';
import { concat, dbfsOf, dominantFrequency, frames, tone } from '../support/audio.js';
import { startTestGateway, sleep, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { MemoryLeg } from '../support/memory-leg.js';
import { OpenAiApiStandIn } from '../peers/openai-sip/api-standin.js';
import { FakeOpenAiSipDialer } from '../peers/openai-sip/fake-dialer.js';
import { startFakeDialGateway } from '../peers/openai-sip/route.js';
import { incomingCallEvent, postSignedWebhook } from '../peers/openai-sip/webhook-signer.js';

const SECRET = `whsec_${Buffer.from('openai-sip-test-secret-0123456789').toString('base64')}`;
const API_KEY = 'sk-test-openai-sip';

let gw: Gateway;
let standIn: OpenAiApiStandIn;
let dialer: FakeOpenAiSipDialer;
const webhookUrl = () => `http://127.0.0.1:${gw.httpPort}/webhooks/openai/openai_sip`;
const projectUrl = () => `http://127.0.0.1:${gw.httpPort}/webhooks/openai/proj_test`;

beforeEach(async () => {
  standIn = new OpenAiApiStandIn(API_KEY);
  const apiBaseUrl = await standIn.start();
  ({ gw, dialer } = await startFakeDialGateway({ secret: SECRET, apiKey: API_KEY, apiBaseUrl }, standIn, {
    instructions: 'Be a test.',
    sideband: false,
  }));
});
afterEach(async () => {
  await gw.stop('test_done', 0);
  await standIn.stop();
});

const pcmu = createCodec(PCMU_8K);

/**
 * The loud frames written to a leg so far, decoded incrementally in order (an Opus decoder keeps
 * state): tests wait on this instead of sleeping, since a loaded box may start media late.
 */
function loudFrames(written: Buffer[], decode: (f: Buffer) => Int16Array): () => Int16Array[] {
  const loud: Int16Array[] = [];
  let next = 0;
  return () => {
    for (; next < written.length; next++) {
      const pcm = decode(written[next]!);
      if (dbfsOf(pcm) > -30) loud.push(pcm);
    }
    return loud;
  };
}
const ulaw = (f: Buffer) => pcmu.decode(f);

describe('OpenAI SIP route', () => {
  it('carrier G.711 ⇄ OpenAI G.711 is relayed untranscoded, audio both ways, accept carries the route session', async () => {
    const call = gw.ctx.registry.create({
      front: 'sip',
      from: '+250788000001',
      to: '+250700000111',
      trunk: 'mtn-rwanda',
    });
    const caller = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    caller.feed(frames(tone(1000, 8000, 3000, 8000), 160).map((f) => pcmu.encode(f)));
    const { bridge, route } = await gw.ctx.connector.connect(call, caller);
    expect(route.name).toBe('openai_sip');
    expect(bridge.passthrough).toBe(true);
    const accept = standIn.requests.find((r) => r.action === 'accept')!;
    expect(accept.problems).toEqual([]);
    expect(accept.body).toMatchObject({
      type: 'realtime',
      model: 'gpt-realtime',
      instructions: 'Be a test.',
      audio: { output: { voice: 'marin' } },
    });
    expect(dialer.invites[0]!.uri).toBe('sip:proj_test@sip.api.openai.com;transport=tls');
    expect(dialer.invites[0]!.headers['X-Gateway-Call-Id']).toBe(call.id);
    const openai = dialer.legs[0]!;
    const atOpenAi = loudFrames(openai.written, ulaw);
    const atCaller = loudFrames(caller.written, ulaw);
    await waitFor(() => atOpenAi().length >= 40 && atCaller().length >= 40, 10_000, '0.8 s of tone each way');
    const heardByOpenAi = concat(atOpenAi());
    expect(Math.abs(dominantFrequency(heardByOpenAi, 8000) - 1000)).toBeLessThan(20);
    const heardByCaller = concat(atCaller());
    expect(Math.abs(dominantFrequency(heardByCaller, 8000) - 440)).toBeLessThan(9);
    await call.end({ by: 'remote', cause: 'bye' });
    expect(openai.closedWith?.cause).toBe('bye'); // our BYE towards OpenAI
  });

  it('a WhatsApp Opus caller is transcoded to G.711 for OpenAI, audio both ways', async () => {
    const call = gw.ctx.registry.create({ front: 'whatsapp', from: '250788000002', to: '+250700000111' });
    const opus = createCodec(OPUS_48K, 24000);
    const caller = new MemoryLeg(call.id, OPUS_48K, opus.silence());
    caller.feed(frames(tone(1000, 24000, 3000, 8000), 480).map((f) => opus.encode(f)));
    const { bridge } = await gw.ctx.connector.connect(call, caller);
    expect(bridge.passthrough).toBe(false);
    const dec = createCodec(OPUS_48K, 24000);
    const atOpenAi = loudFrames(dialer.legs[0]!.written, ulaw);
    const atCaller = loudFrames(caller.written, (f) => dec.decode(f));
    await waitFor(() => atOpenAi().length >= 40 && atCaller().length >= 40, 10_000, '0.8 s of tone each way');
    const heardByOpenAi = concat(atOpenAi());
    expect(Math.abs(dominantFrequency(heardByOpenAi, 8000) - 1000)).toBeLessThan(20);
    const heardByCaller = concat(atCaller());
    expect(Math.abs(dominantFrequency(heardByCaller, 24000) - 440)).toBeLessThan(9);
    await call.end({ by: 'remote', cause: 'terminate' });
  });

  it('OpenAI hanging up ends the call and the caller’s leg with the reason', async () => {
    const call = gw.ctx.registry.create({ front: 'sip', from: '+250788000003', to: '+250700000111' });
    const caller = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    await gw.ctx.connector.connect(call, caller);
    dialer.legs[0]!.hangup({ by: 'remote', cause: 'bye' });
    await waitFor(() => call.ended, 5000, 'call end');
    expect(call.endReason).toMatchObject({ by: 'ai', cause: 'ai_closed', detail: 'openai_bye' });
    expect(caller.closedWith?.cause).toBe('ai_closed');
  });

  it('refuses bad, missing and expired signatures with 401; a redelivery is acknowledged and not acted on', async () => {
    const ev = incomingCallEvent('rtc_forged', [{ name: 'X-Gateway-Call-Id', value: 'x' }]);
    expect(await postSignedWebhook(webhookUrl(), SECRET, ev, { badSignature: true })).toBe(401);
    expect(await postSignedWebhook(webhookUrl(), SECRET, ev, { omitSignature: true })).toBe(401);
    expect(await postSignedWebhook(webhookUrl(), SECRET, ev, { timestampOffsetSec: -600 })).toBe(401);
    expect(await postSignedWebhook(webhookUrl(), `whsec_${Buffer.from('another-secret').toString('base64')}`, ev)).toBe(
      401,
    );
    expect(await postSignedWebhook(webhookUrl(), SECRET, ev, { id: 'wh_same' })).toBe(200);
    expect(await postSignedWebhook(webhookUrl(), SECRET, ev, { id: 'wh_same' })).toBe(200);
    await sleep(200);
    // Nothing was acted on: a call we did not dial is left alone by default, and only once.
    expect(standIn.requests).toEqual([]);
    const metrics = await (
      await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } })
    ).text();
    expect(metrics).toMatch(/gateway_webhook_rejections_total\{source="openai",reason="signature check failed"\} 3/);
  });

  it('a call we did not place is acknowledged and left alone, on the project URL and the route URL', async () => {
    const ev = incomingCallEvent('rtc_stranger', [{ name: 'From', value: '<sip:+1555@x>' }]);
    expect(await postSignedWebhook(projectUrl(), SECRET, ev)).toBe(200);
    expect(await postSignedWebhook(webhookUrl(), SECRET, ev)).toBe(200);
    await sleep(300);
    expect(standIn.requests).toEqual([]);
  });

  it('a redelivered incoming-call event (same webhook-id) gets 200 and the call is accepted once', async () => {
    dialer = new FakeOpenAiSipDialer(projectUrl, SECRET, standIn, 440, 3);
    gw.ctx.legDialer = dialer;
    const call = gw.ctx.registry.create({ front: 'sip', from: '+250788000007', to: '+250700000111' });
    const caller = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    await gw.ctx.connector.connect(call, caller);
    expect(dialer.statuses).toEqual([200, 200, 200]);
    await sleep(300); // negative window: the redelivered webhooks must not accept again
    expect(standIn.requests.map((r) => r.action)).toEqual(['accept']);
    const atCaller = loudFrames(caller.written, ulaw);
    await waitFor(() => atCaller().length >= 25, 10_000, '0.5 s of the AI at the caller');
    const heard = concat(atCaller());
    expect(Math.abs(dominantFrequency(heard, 8000) - 440)).toBeLessThan(9);
    await call.end({ by: 'remote', cause: 'bye' });
  });

  it('one routing table sends one number to the local agent and another to OpenAI SIP in the same run', async () => {
    const a = gw.ctx.registry.create({ front: 'sip', from: '+250788000004', to: '+250700000999' });
    const b = gw.ctx.registry.create({ front: 'sip', from: '+250788000005', to: '+250700000111' });
    const ra = await gw.ctx.connector.connect(a, new MemoryLeg(a.id, PCMU_8K, pcmu.silence()));
    const rb = await gw.ctx.connector.connect(b, new MemoryLeg(b.id, PCMU_8K, pcmu.silence()));
    expect([ra.route.name, rb.route.name]).toEqual(['local', 'openai_sip']);
    expect(dialer.invites.length).toBe(1);
  });
});

describe('OpenAI SIP routes sharing one project', () => {
  it('two routes on one project both get their calls through the project webhook; unmatched: reject refuses strangers', async () => {
    const other = `whsec_${Buffer.from('second-endpoint-secret-0123456789').toString('base64')}`;
    await gw.stop('test_done', 0);
    const common = {
      kind: 'openai-sip',
      projectId: 'proj_shared',
      apiKey: API_KEY,
      sideband: false,
      unmatched: 'reject',
    };
    gw = await startTestGateway({
      routes: {
        local: { kind: 'local' },
        sales: { ...common, webhookSecret: SECRET, apiBaseUrl: standIn.baseUrl, instructions: 'You sell.' },
        support: { ...common, webhookSecret: other, apiBaseUrl: standIn.baseUrl, instructions: 'You help.' },
      },
      routing: {
        default: 'local',
        rules: [
          { to: '+250700000001', route: 'sales' },
          { to: '+250700000002', route: 'support' },
        ],
      },
    });
    const url = () => `http://127.0.0.1:${gw.httpPort}/webhooks/openai/proj_shared`;
    // OpenAI signs with the secret of the endpoint it delivers to: one dialer per secret, one URL.
    const salesDialer = new FakeOpenAiSipDialer(url, SECRET, standIn, 500);
    const supportDialer = new FakeOpenAiSipDialer(url, other, standIn, 700);
    const routed: Record<string, FakeOpenAiSipDialer> = {
      '+250700000001': salesDialer,
      '+250700000002': supportDialer,
    };
    gw.ctx.legDialer = { dial: (req) => routed[req.call.info.to]!.dial(req) };
    const place = async (to: string) => {
      const call = gw.ctx.registry.create({ front: 'sip', from: '+250788000009', to });
      const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
      const { route } = await gw.ctx.connector.connect(call, leg);
      return { call, leg, route: route.name };
    };
    const [a, b] = await Promise.all([place('+250700000001'), place('+250700000002')]);
    expect([a.route, b.route]).toEqual(['sales', 'support']);
    const accepts = standIn.requests.filter((r) => r.action === 'accept');
    expect(accepts.map((r) => r.body.instructions).sort()).toEqual(['You help.', 'You sell.']);
    const [atA, atB] = [loudFrames(a.leg.written, ulaw), loudFrames(b.leg.written, ulaw)];
    await waitFor(() => atA().length >= 25 && atB().length >= 25, 10_000, '0.5 s of each AI');
    expect(Math.abs(dominantFrequency(concat(atA()), 8000) - 500)).toBeLessThan(10);
    expect(Math.abs(dominantFrequency(concat(atB()), 8000) - 700)).toBeLessThan(10);
    // With unmatched: reject, a call nobody here dialed is refused (603) — once, however often it is announced.
    const stranger = incomingCallEvent('rtc_stranger2', []);
    expect(await postSignedWebhook(url(), other, stranger)).toBe(200);
    expect(await postSignedWebhook(url(), SECRET, stranger)).toBe(200);
    const rej = await standIn.waitFor((r) => r.callId === 'rtc_stranger2', 2000);
    expect(rej).toMatchObject({ action: 'reject', body: { status_code: 603 } });
    await sleep(200);
    expect(standIn.requests.filter((r) => r.callId === 'rtc_stranger2')).toHaveLength(1);
    await Promise.all([a.call.end({ by: 'remote', cause: 'bye' }), b.call.end({ by: 'remote', cause: 'bye' })]);
  });

  it('routes on one project that disagree about unmatched calls are a config error naming the key', () => {
    const base = { kind: 'openai-sip', projectId: 'p1', webhookSecret: SECRET, apiKey: API_KEY };
    expect(() =>
      parseConfig({ routes: { a: { ...base }, b: { ...base, unmatched: 'reject' } }, routing: { default: 'a' } }, {}),
    ).toThrow(/routes\.b\.unmatched: got "reject", expected "ignore" like route a/);
  });
});
