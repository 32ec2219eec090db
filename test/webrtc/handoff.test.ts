import { afterEach, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { API_TOKEN } from '../peers/whatsapp/harness.js';
import { toneSource } from '../peers/whatsapp/tones.js';
import { api, sleep, waitFor } from '../support/gateway.js';
import { freeUdpPort } from '../support/free-ports.js';
import { HUMAN_HZ, person } from '../sip/handoff-rig.js';
import { expectBridgedTone, startSipWhatsAppHarness, type Cleanups } from './handoff-rig.js';

/**
 * A WhatsApp caller (werift user) handed to a person on the SIP trunk (a sipp UAS, media at a test
 * RTP endpoint): the gateway bridges Opus 48 kHz ⇄ G.711 A-law, and the person's BYE ends the
 * WhatsApp call with Graph terminate.
 */
const USER_HZ = 500;

let cleanups: Cleanups = [];
afterEach(async () => {
  for (const fn of cleanups.reverse()) await fn();
  cleanups = [];
});

describe('WhatsApp caller handed to a SIP person', () => {
  it('operator transfer (auto: no REFER on WhatsApp → bridge): Opus ⇄ G.711 both ways; the BYE ends it with terminate', async () => {
    const phonePort = await freeUdpPort();
    const h = await startSipWhatsAppHarness(cleanups, {
      transfer: { allow: ['+250788000111'], mode: 'auto', ringTimeoutSec: 10 },
      dialUri: `sip:127.0.0.1:${phonePort}`,
    });
    const { human, sipp } = await person(
      cleanups,
      { phonePort },
      { user: '.250788000111', ringMs: 1000, talkMs: 5000, timeoutSec: 40 },
    );

    const user = h.user('250788123456');
    await user.call(30_000);
    user.startSending(toneSource(USER_HZ));
    await waitFor(() => h.gw.ctx.registry.list({ front: 'whatsapp', state: 'bridged' }).length === 1, 8000, 'bridged');
    const call: Call = h.gw.ctx.registry.list({ front: 'whatsapp' })[0]!;

    const r = await api(h.gw, API_TOKEN)('POST', `/v1/calls/${call.id}/transfer`, { destination: '+250788000111' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({ ok: true, outcome: 'bridged' });
    expect(h.sessions.get(call.id)!.closedWith).toBe('transferred');
    const talk = performance.now();
    await sleep(2500);

    const atHuman = human.audioSince(talk + 300);
    expectBridgedTone(atHuman, 8000, USER_HZ, 8000, 10);
    const atUser = user.decodeReceived(talk + 300);
    expectBridgedTone(atUser, 48000, HUMAN_HZ, 48000, 15);

    const res = await sipp;
    expect(res.code, res.errors + res.messages.slice(-2000)).toBe(0);
    const term = await h.graph.waitFor('terminate', user.waCallId, 8000);
    expect(term.problems).toEqual([]);
    await waitFor(() => call.ended, 5000, 'call ended');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye', party: 'target' });
    expect(call.transfers).toMatchObject([{ destination: '+250788000111', mode: 'auto', outcome: 'bridged' }]);
    expect(call.legs.map((l) => l.format.codec)).toEqual(['opus', 'pcma']);
  }, 120_000);
});
