import { afterEach, describe, expect, it } from 'vitest';
import { RealtimeBackend } from '../../src/ai/realtime/backend.js';
import type { RealtimeSession } from '../../src/ai/realtime/session.js';
import { type RealtimeRouteConfig, routeSchema } from '../../src/config/schema.js';
import { createCodec } from '../../src/core/audio/codecs.js';
import { PCMU_8K } from '../../src/core/audio/format.js';
import { CallConnector } from '../../src/core/connector.js';
import { FrameClock } from '../../src/core/frame-clock.js';
import { testLogger } from '../../src/core/logger.js';
import { CallRegistry } from '../../src/core/registry.js';
import { Router } from '../../src/core/router.js';
import { RealtimeTestServer } from '../peers/realtime/server.js';
import { frames, tone } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { MemoryLeg } from '../support/memory-leg.js';

/**
 * The Realtime service's own ways of ending and annotating a session: at its length cap it sends an
 * `error` (session_expired) and closes the socket cleanly (1001); every response brings
 * `rate_limits.updated`; transcripts stream as deltas before their final text.
 */

const pcmu = createCodec(PCMU_8K);
const CALLER_TONE = frames(tone(1000, 8000, 600, 8000), 160).map((f) => pcmu.encode(f));

let cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

describe('Realtime session limit, rate limits and transcript deltas', () => {
  it('at the session limit (error + clean close) a re-seeded session takes over; the call carries on', async () => {
    const server = new RealtimeTestServer({ toneMs: 600 });
    await server.start();
    cleanups.push(() => server.stop());
    const route = routeSchema.parse({
      kind: 'realtime',
      url: server.url,
      apiKey: 'sk-test-0123456789',
      firstTurn: { mode: 'none' },
    }) as RealtimeRouteConfig;
    const clock = new FrameClock();
    const connector = new CallConnector({
      router: new Router({ routes: { openai: route }, routing: { default: 'openai', rules: [] }, trunks: [] }),
      clock,
      backendFor: () => new RealtimeBackend(route),
    });
    const call = new CallRegistry(testLogger()).create({ front: 'test', from: '+250788000001', to: '+250700000000' });
    cleanups.push(() => call.end({ by: 'gateway', cause: 'test_done' }));
    const leg = new MemoryLeg(call.id, PCMU_8K, pcmu.silence());
    const { session } = await connector.connect(call, leg);
    const errors: Error[] = [];
    session.on('error', (e) => errors.push(e));

    // Turn 1 on the first session: transcripts arrive as deltas, then as the final text.
    leg.feed(CALLER_TONE);
    const first = server.connections[0]!;
    await server.until(() => first.answers[0]?.status === 'completed', 5000, 'answer 1');
    await waitFor(() => call.transcript.length === 2, 3000, 'turn 1 transcripts');
    const sentTypes = first.sent.map((e) => e.type);
    expect(sentTypes.filter((t) => t === 'rate_limits.updated')).toHaveLength(1);
    expect(sentTypes.indexOf('conversation.item.input_audio_transcription.delta')).toBeLessThan(
      sentTypes.indexOf('conversation.item.input_audio_transcription.completed'),
    );
    expect(sentTypes.filter((t) => t === 'response.output_audio_transcript.delta')).toHaveLength(5); // "turn 1 tone 600 Hz", a word at a time
    // Only final texts reach the call's transcript (no partials, no duplicates).
    expect(call.transcript.map((t) => [t.role, t.text])).toEqual([
      ['caller', expect.stringMatching(/^tone (99\d|100\d) Hz$/)],
      ['ai', 'turn 1 tone 600 Hz'],
    ]);

    // The service's session cap (here: now): error session_expired, then close 1001.
    server.expireSession(0);
    await server.until(() => server.connections.length === 2 && server.openConnections === 1, 5000, 'new session');
    expect(first.errorsSent).toEqual([
      { code: 'session_expired', message: 'Your session hit the maximum duration of 1 minutes.' },
    ]);
    expect(first.closedByServer).toBe(1001);
    const second = server.connections[1]!;
    await server.until(() => second.seededItems.length === 1, 3000, 'conversation re-seeded');
    expect(JSON.stringify(second.seededItems[0])).toContain('turn 1 tone 600 Hz');

    // Expected, not a failure: no error surfaced, one reconnect; and turn 2 is answered on the new session.
    expect(errors).toEqual([]);
    const stats = (session as RealtimeSession).stats;
    expect(stats.reconnects).toBe(1);
    expect(stats.errors).toBe(0);
    leg.feed(CALLER_TONE);
    await server.until(() => second.answers[0]?.status === 'completed', 5000, 'answer on the new session');
    expect(call.state).toBe('bridged');
    expect(server.violations).toEqual([]);
  });
});
