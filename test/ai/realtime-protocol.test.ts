import { describe, expect, it } from 'vitest';
import { sessionConfig, wireFormatFor } from '../../src/ai/realtime/protocol.js';
import { ToolRegistry } from '../../src/ai/realtime/tools.js';
import { type RealtimeRouteConfig, routeSchema } from '../../src/config/schema.js';
import { l16, OPUS_48K, PCMA_8K, PCMU_8K } from '../../src/core/audio/format.js';
import { clientEventSchemas } from '../peers/realtime/schemas.js';

const route = (extra: Record<string, unknown> = {}) =>
  routeSchema.parse({ kind: 'realtime', apiKey: 'sk-x', ...extra }) as RealtimeRouteConfig;

/** session.update for a route and leg, checked against the API's accepted shape. */
function update(r: RealtimeRouteConfig, leg = PCMU_8K) {
  const ev = {
    type: 'session.update',
    session: sessionConfig(r, wireFormatFor(leg), new ToolRegistry(r).definitions()),
  };
  const parsed = clientEventSchemas['session.update'].safeParse(ev);
  expect(parsed.success, JSON.stringify(parsed.error?.issues)).toBe(true);
  return ev.session;
}

describe('Realtime session configuration', () => {
  it('chooses the wire format per leg so G.711 passes straight through', () => {
    expect(wireFormatFor(PCMU_8K)).toEqual({ wire: { type: 'audio/pcmu' }, format: PCMU_8K });
    expect(wireFormatFor(PCMA_8K)).toEqual({ wire: { type: 'audio/pcma' }, format: PCMA_8K });
    expect(wireFormatFor(OPUS_48K)).toEqual({ wire: { type: 'audio/pcm', rate: 24000 }, format: l16(24000) });
    expect(update(route(), PCMA_8K).audio?.output?.format).toEqual({ type: 'audio/pcma' });
  });

  it('maps each turn-detection setting and transcription on/off', () => {
    const semantic = update(route({ turnDetection: { type: 'semantic_vad', eagerness: 'low' } }));
    expect(semantic.audio?.input?.turn_detection).toEqual({
      type: 'semantic_vad',
      eagerness: 'low',
      create_response: true,
      interrupt_response: true,
    });
    const manual = update(route({ turnDetection: null, transcription: false }));
    expect(manual.audio?.input?.turn_detection).toBeNull();
    expect(manual.audio?.input).not.toHaveProperty('transcription');
    const vad = update(route({ turnDetection: { type: 'server_vad', threshold: 0.7, silenceDurationMs: 800 } }));
    expect(vad.audio?.input?.turn_detection).toEqual({
      type: 'server_vad',
      threshold: 0.7,
      prefix_padding_ms: 300,
      silence_duration_ms: 800,
      create_response: true,
      interrupt_response: true,
    });
  });

  it('offers the built-in tools plus route tools; bad arguments become an error output, not a throw', async () => {
    const r = route({
      transferTarget: '+250788000000',
      tools: [{ name: 'crm', description: 'CRM', url: 'http://127.0.0.1:9/x', timeoutMs: 300 }],
    });
    const reg = new ToolRegistry(r);
    expect(reg.definitions().map((d) => d.name)).toEqual(['end_call', 'transfer_call', 'crm']);
    const ctx = {
      callId: 'c1',
      log: (await import('../../src/core/logger.js')).testLogger(),
      signal: new AbortController().signal,
      control: {
        hangupAfterPlayout: () => {},
        transfer: async (d: string) => ({ ok: true, detail: `to ${d}` }),
      },
    };
    expect(JSON.parse((await reg.run('crm', '[1,2]', ctx)).output).error).toMatch(/not a JSON object/);
    expect(JSON.parse((await reg.run('nope', '{}', ctx)).output).error).toMatch(/unknown tool/);
    // transfer_call with no destination uses the route's transferTarget.
    expect(JSON.parse((await reg.run('transfer_call', '{}', ctx)).output)).toEqual({
      ok: true,
      detail: 'to +250788000000',
    });
    // An unreachable tool URL answers the model with an error instead of hanging the call.
    const unreachable = await reg.run('crm', '{"q":1}', ctx);
    expect(JSON.parse(unreachable.output).error).toMatch(/unreachable|no answer/);
    expect(unreachable.respond).toBe(true);
  });
});
