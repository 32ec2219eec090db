import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import type { OpenAiSipRouteConfig } from '../../src/config/schema.js';
import type { Call } from '../../src/core/call.js';
import type { Gateway } from '../../src/gateway.js';
import { concat, dbfsOf, dominantFrequency, frames, tone } from '../support/audio.js';
import { api, sleep, waitFor } from '../support/gateway.js';
import { MemoryLeg } from '../support/memory-leg.js';
import { OpenAiApiStandIn } from '../peers/openai-sip/api-standin.js';
import { FakeOpenAiSipDialer } from '../peers/openai-sip/fake-dialer.js';
import { startFakeDialGateway } from '../peers/openai-sip/route.js';
import { RealtimeTestServer } from '../peers/realtime/server.js';

const SECRET = `whsec_${Buffer.from('openai-sip-sideband-secret-0123').toString('base64')}`;
const API_KEY = 'sk-test-openai-sideband';
const pcmu = createCodec(PCMU_8K);

let gw: Gateway;
let standIn: OpenAiApiStandIn;
let dialer: FakeOpenAiSipDialer;
let rt: RealtimeTestServer;
let toolHttp: Server;
const toolRequests: { body: unknown; callId: string | undefined }[] = [];

beforeEach(async () => {
  toolRequests.length = 0;
  toolHttp = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString()));
    req.on('end', () => {
      toolRequests.push({ body: JSON.parse(body), callId: req.headers['x-call-id'] as string | undefined });
      res.writeHead(200, { 'content-type': 'application/json' }).end('{"order":"A-17","status":"shipped"}');
    });
  });
  await new Promise<void>((r) => toolHttp.listen(0, '127.0.0.1', r));
  standIn = new OpenAiApiStandIn(API_KEY);
  const apiBaseUrl = await standIn.start();
  rt = new RealtimeTestServer();
  await rt.start();
  ({ gw, dialer } = await startFakeDialGateway({ secret: SECRET, apiKey: API_KEY, apiBaseUrl }, standIn, {
    realtimeUrl: rt.url,
    connectTimeoutMs: 2000,
    firstTurn: { mode: 'none' }, // these tests count answers from the caller's first turn
    transfer: { allow: ['+25078*'] },
    tools: [
      {
        name: 'lookup_order',
        description: 'Order status',
        url: `http://127.0.0.1:${(toolHttp.address() as AddressInfo).port}/orders`,
        parameters: { type: 'object', properties: { order: { type: 'string' } }, required: ['order'] },
        timeoutMs: 2000,
      },
    ],
  }));
});

afterEach(async () => {
  await gw.stop('test_done', 0);
  await rt.stop();
  await standIn.stop();
  await new Promise<void>((r) => toolHttp.close(() => r()));
});

/** A carrier call to the OpenAI SIP number, the caller playing 1 kHz; OpenAI's leg plays 440 Hz. */
async function placeCall(): Promise<{ call: Call; caller: MemoryLeg; openai: MemoryLeg; openAiCallId: string }> {
  const call = gw.ctx.registry.create({ front: 'sip', from: '+250788000001', to: '+250700000111', trunk: 'mtn' });
  const caller = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
  caller.feed(frames(tone(1000, 8000, 3000, 8000), 160).map((f) => pcmu.encode(f)));
  await gw.ctx.connector.connect(call, caller);
  const accept = standIn.requests.find((r) => r.action === 'accept')!;
  return { call, caller, openai: dialer.legs.at(-1)!, openAiCallId: accept.callId };
}

/** The Realtime server's connection once our session.update has been applied. */
async function sidebandUp() {
  await rt.until(() => rt.receivedOf('session.update').length > 0, 3000, 'sideband session.update');
  return rt.connections[0]!;
}

const loudPcm = (written: Buffer[]) => concat(written.map((f) => pcmu.decode(f)).filter((p) => dbfsOf(p) > -30));

describe('OpenAI SIP sideband', () => {
  it('connects with the call id and key, switches on transcription and tools, and relays transcripts to the call', async () => {
    const { call, openAiCallId } = await placeCall();
    const conn = await sidebandUp();
    expect(conn.callId).toBe(openAiCallId);
    expect(conn.model).toBeNull();
    expect(conn.authorization).toBe(`Bearer ${API_KEY}`);
    const update = rt.receivedOf('session.update')[0]!;
    expect(update.session.tools?.map((t) => t.name)).toEqual([
      'end_call',
      'send_dtmf',
      'transfer_call',
      'lookup_order',
    ]);
    expect(update.session.audio?.input?.transcription?.model).toBe('gpt-4o-mini-transcribe');
    expect(update.session.audio?.input?.format).toBeUndefined(); // formats are the SIP leg's business

    // Garbage from the far end is logged and skipped.
    rt.inject('not json');
    rt.inject('{"type":"response.function_call_arguments.done","arguments":"{}"}');
    rt.inject('{"type":"response.output_audio_transcript.done","transcript":42}');
    rt.callerTurn('Where is my order?');
    await waitFor(() => call.transcript.length === 2, 3000, 'two transcript entries');
    expect(call.transcript.map((t) => [t.role, t.text])).toEqual([
      ['caller', 'Where is my order?'],
      ['ai', 'turn 1 tone 600 Hz'],
    ]);
    const view = await api(gw)('GET', `/v1/calls/${call.id}`);
    expect(view.status).toBe(200);
    expect((view.body.transcript as { text: string }[]).map((t) => t.text)).toEqual([
      'Where is my order?',
      'turn 1 tone 600 Hz',
    ]);
    expect(conn.appendSizes).toEqual([]); // no audio on the sideband

    // Operator "say" through the REST API reaches OpenAI as a response.create over the sideband.
    expect((await api(gw)('POST', `/v1/calls/${call.id}/say`, { text: 'Your parcel ships today.' })).status).toBe(200);
    await rt.until(
      () => rt.receivedOf('response.create').some((e) => JSON.stringify(e).includes('Your parcel ships today.')),
      3000,
      'say over the sideband',
    );
    expect(rt.violations).toEqual([]);

    await call.end({ by: 'remote', cause: 'bye' });
    await rt.until(() => rt.openConnections === 0, 3000, 'sideband closed at call end');
    expect(conn.closed).toBe(true);
  });

  it('an HTTP tool round-trips, and transfer_call uses the front’s own transfer (not OpenAI’s REFER)', async () => {
    rt.configure({
      toolCalls: {
        1: { name: 'lookup_order', arguments: { order: 'A-17' } },
        2: { name: 'transfer_call', arguments: { destination: '+250788000009' } },
      },
    });
    const { call } = await placeCall();
    const transfers: string[] = [];
    call.transfer = async (destination) => {
      transfers.push(destination);
    };
    const conn = await sidebandUp();

    rt.callerTurn('Where is order A-17?');
    await rt.until(() => conn.answers[1]?.status === 'completed', 5000, 'answer after the tool output');
    expect(toolRequests).toEqual([{ body: { order: 'A-17' }, callId: call.id }]);
    expect(conn.toolOutputs).toEqual([
      { call_id: conn.answers[0]!.toolCallId, output: '{"order":"A-17","status":"shipped"}' },
    ]);
    // Output first, then one response.create, only after the tool's response was done.
    const types = conn.received.map((r) => r.type).filter((t) => t !== 'session.update');
    expect(types).toEqual(['conversation.item.create', 'response.create']);

    rt.callerTurn('Put me through to a person.');
    await rt.until(() => conn.toolOutputs.length === 2, 5000, 'transfer output');
    expect(transfers).toEqual(['+250788000009']);
    expect(JSON.parse(conn.toolOutputs[1]!.output)).toEqual({
      ok: true,
      outcome: 'referred',
      detail: 'transferred to +250788000009',
    });
    expect(standIn.requests.some((r) => r.action === 'refer')).toBe(false);
    await waitFor(() => call.toolCalls.length === 2, 2000, 'tool records');
    expect(call.toolCalls.map((t) => [t.name, t.output])).toEqual([
      ['lookup_order', conn.toolOutputs[0]!.output],
      ['transfer_call', conn.toolOutputs[1]!.output],
    ]);
    expect(rt.violations).toEqual([]);
    expect(conn.errorsSent).toEqual([]);
  });

  it('end_call waits for OpenAI to finish speaking, then ends the call with cause end_call and BYEs OpenAI', async () => {
    // The stand-in plays its goodbye (1.5 s) on the SIP leg in real time and reports it on the
    // sideband by itself: output_audio_buffer.started at its first audio, .stopped when played out.
    // Here OpenAI's leg (440 Hz) falls silent half-way, while its buffer still reports playing.
    rt.configure({ toolCalls: { 1: { name: 'end_call', arguments: { reason: 'caller is done' }, audioFirst: true } } });
    const { call, caller, openai } = await placeCall();
    const conn = await sidebandUp();
    const seen: { type: string; ended: boolean; at: number }[] = [];
    let endedAt = 0;
    call.once('ended', () => (endedAt = performance.now()));
    rt.onSent = (_, type) => {
      if (type.startsWith('output_audio_buffer.')) seen.push({ type, ended: call.ended, at: performance.now() });
    };
    rt.callerTurn('That is all, thanks.');
    await waitFor(() => call.toolCalls.length === 1, 3000, 'end_call tool call');
    const atEndCall = caller.written.length;
    // Synchronised on frames, not a timer: once the caller has heard 10 more frames of the goodbye,
    // OpenAI's leg falls silent.
    await waitFor(() => caller.written.length >= atEndCall + 10, 3000, 'goodbye frames after end_call');
    openai.inbound.length = 0;
    const writtenWhenSilenced = caller.written.length;
    await rt.until(() => conn.toolOutputs.length === 1, 2000, 'end_call output');
    expect(conn.toolOutputs).toEqual([{ call_id: conn.answers[0]!.toolCallId, output: '{"ok":true}' }]);
    await waitFor(() => call.ended, 5000, 'call end');

    // The call was still up when OpenAI said its playout had stopped (its leg had been quiet for
    // a while by then: the sideband's "still playing" held the line), and ended only after the quiet
    // spell that follows (DRAIN_QUIET_MS = 400), long before the 15 s cap.
    expect(seen.map((s) => [s.type, s.ended])).toEqual([
      ['output_audio_buffer.started', false],
      ['output_audio_buffer.stopped', false],
    ]);
    expect(endedAt - seen[1]!.at).toBeGreaterThanOrEqual(400);
    expect(call.endReason).toMatchObject({ by: 'ai', cause: 'end_call' });
    expect(openai.closedWith?.cause).toBe('end_call'); // our BYE to OpenAI
    expect(caller.closedWith?.cause).toBe('end_call');
    // After end_call the caller still heard the rest of OpenAI's goodbye (440 Hz): every frame OpenAI's
    // leg played until it fell silent (a frame or two may still be in flight through the bridge).
    expect(writtenWhenSilenced).toBeGreaterThan(atEndCall);
    const heard = loudPcm(caller.written.slice(atEndCall));
    expect(heard.length / 160).toBeGreaterThanOrEqual(writtenWhenSilenced - atEndCall - 2);
    expect(Math.abs(dominantFrequency(heard, 8000) - 440)).toBeLessThan(9);
    expect(standIn.requests.some((r) => r.action === 'hangup')).toBe(false);
    await rt.until(() => rt.openConnections === 0, 3000, 'sideband closed');
    expect(rt.violations).toEqual([]);
  });

  it('caller keypad 1 2 # reaches OpenAI over the sideband as one user message, then a response', async () => {
    const { call, caller } = await placeCall();
    const conn = await sidebandUp();
    for (const d of '12#') caller.dtmf(d);
    await rt.until(() => conn.seededItems.length === 1, 3000, 'keypad item over the sideband');
    expect(conn.seededItems[0]).toMatchObject({
      type: 'message',
      role: 'user',
      content: [{ type: 'input_text', text: 'The caller pressed these keys on their phone keypad: 12' }],
    });
    await rt.until(() => rt.receivedOf('response.create').length === 1, 3000, 'response asked for');
    expect(call.transcript.map((t) => t.text)).toContain('[keypad] 12');
    expect(rt.violations).toEqual([]);
  });

  it('a refused sideband (401) leaves the call up with audio both ways', async () => {
    rt.configure({ rejectWith: 401 });
    const { call, caller, openai } = await placeCall();
    await rt.until(() => rt.attempts >= 1, 3000, 'the refused sideband attempt');
    await waitFor(
      () => loudPcm(openai.written).length > 4000 && loudPcm(caller.written).length > 4000,
      5000,
      'audio both ways after the refusal',
    );
    expect(call.ended).toBe(false);
    expect(call.state).toBe('bridged');
    expect(rt.connections).toEqual([]);
    const heardByOpenAi = loudPcm(openai.written);
    expect(heardByOpenAi.length).toBeGreaterThan(8000 * 0.5);
    expect(Math.abs(dominantFrequency(heardByOpenAi, 8000) - 1000)).toBeLessThan(20);
    const heardByCaller = loudPcm(caller.written);
    expect(heardByCaller.length).toBeGreaterThan(8000 * 0.5);
    expect(Math.abs(dominantFrequency(heardByCaller, 8000) - 440)).toBeLessThan(9);
    await call.end({ by: 'remote', cause: 'bye' });
    expect(openai.closedWith?.cause).toBe('bye');
  });

  it('firstTurn: after answer the greeting is asked for over the sideband, once, after its configuration', async () => {
    const route = gw.ctx.config.routes.openai_sip as OpenAiSipRouteConfig;
    route.firstTurn = { mode: 'text', text: 'Hello from Acme.' };
    const { call } = await placeCall();
    const conn = await sidebandUp();
    await rt.until(() => rt.receivedOf('response.create').length === 1, 3000, 'first turn over the sideband');
    expect(conn.received.map((r) => r.type)).toEqual(['session.update', 'response.create']);
    expect(rt.receivedOf('response.create')[0]!.response?.instructions).toContain('"Hello from Acme."');
    await rt.until(() => conn.answers[0]?.status === 'completed', 5000, 'greeting generated');
    expect(standIn.requests.find((r) => r.action === 'accept')).toBeDefined();
    await sleep(300);
    expect(rt.receivedOf('response.create')).toHaveLength(1);
    expect(call.state).toBe('bridged');
    expect(rt.violations).toEqual([]);
  });

  it('without a sideband the first turn rides in the accept instructions', async () => {
    const route = gw.ctx.config.routes.openai_sip as OpenAiSipRouteConfig;
    route.sideband = false;
    route.firstTurn = { mode: 'text', text: 'Hello from Acme.' };
    await placeCall();
    const accept = standIn.requests.find((r) => r.action === 'accept')!;
    expect((accept.body as { instructions: string }).instructions).toMatch(
      /Begin the call by saying exactly: "Hello from Acme."$/,
    );
    await sleep(300);
    expect(rt.connections).toHaveLength(0);
  });

  it('a dropped sideband is re-established without touching the call', async () => {
    rt.configure({ dropAfterMs: 200 });
    const { call, openAiCallId } = await placeCall();
    await rt.until(() => rt.connections.length === 2 && rt.openConnections === 1, 4000, 'reconnected sideband');
    expect(rt.connections.map((c) => c.callId)).toEqual([openAiCallId, openAiCallId]);
    await rt.until(() => rt.receivedOf('session.update', 1).length === 1, 2000, 'reconfigured');
    expect(call.ended).toBe(false);
    rt.callerTurn('Still there?', 1);
    await waitFor(() => call.transcript.some((t) => t.text === 'Still there?'), 3000, 'transcript after reconnect');
    await call.end({ by: 'remote', cause: 'bye' });
    await rt.until(() => rt.openConnections === 0, 3000, 'sideband closed at call end');
    expect(rt.violations).toEqual([]);
  });
});
