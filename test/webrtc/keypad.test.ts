import { afterEach, describe, expect, it } from 'vitest';
import { RealtimeTestServer } from '../peers/realtime/server.js';
import { startHarness, type Harness } from '../peers/whatsapp/harness.js';
import { sleep, waitFor } from '../support/gateway.js';
import { toneSource } from '../peers/whatsapp/tones.js';

/**
 * Keypad both ways on a WhatsApp call (issue 19): the werift user's RFC 4733 telephone-events reach
 * the AI (the Realtime stand-in) as one keypad input, and the AI's send_dtmf goes back to the user
 * as telephone-event/8000 packets on the Opus stream's SSRC.
 */
let h: Harness | undefined;
let rt: RealtimeTestServer | undefined;
afterEach(async () => {
  await h?.stop();
  await rt?.stop();
  h = rt = undefined;
});

async function keypadCall() {
  rt = new RealtimeTestServer();
  await rt.start();
  h = await startHarness({
    routes: {
      agent: {
        kind: 'realtime',
        url: rt.url,
        apiKey: 'sk-test-0123456789',
        firstTurn: { mode: 'none' },
        dtmf: { mode: 'text', interDigitTimeoutMs: 3000, terminator: '#' },
      },
    },
    routing: { default: 'agent' },
  });
  const user = h.user('250788100077');
  await user.call(30_000);
  user.startSending(toneSource(500));
  await waitFor(() => h!.gw.ctx.registry.list({ front: 'whatsapp', state: 'bridged' }).length === 1, 8000, 'bridged');
  await rt.until(() => rt!.connections[0]?.session.tools !== undefined, 5000, 'session configured');
  const call = h.gw.ctx.registry.list({ front: 'whatsapp' })[0]!;
  return { rt, h, user, call, conn: rt.connections[0]! };
}

describe('WhatsApp keypad to and from the AI', () => {
  it('malformed and flooded events give no extra digit; 1 2 3 # → one input to the AI; send_dtmf("45") reaches the user as RFC 4733 events', async () => {
    const { rt, user, call, conn } = await keypadCall();

    // Hostile packets first: empty, short, an event that is no digit (RFC 4733 §3.2 ends at 15), a
    // flood of end packets for one event. None of them is a keypress, except that one event once.
    const heard: string[] = [];
    call.on('dtmf', (d) => heard.push(d));
    user.sendEventPacket(Buffer.alloc(0));
    user.sendEventPacket(Buffer.from([1, 0x80]));
    user.sendEventPacket(Buffer.from([200, 0x8a, 0x03, 0x20]));
    for (let i = 0; i < 200; i++) user.sendEventPacket(Buffer.from([9, 0x8a, 0x03, 0x20]), 12345);
    await waitFor(() => heard.length === 1, 3000, 'the one flooded event as one digit');
    await sleep(300);
    expect(heard).toEqual(['9']);
    await sleep(3200); // the collector's inter-digit pause delivers "9" on its own first
    await rt.until(() => conn.seededItems.length === 1, 5000, 'the 9 alone');
    expect(JSON.stringify(conn.seededItems[0])).toContain('keypad: 9"');

    // Meta injects one event per press; a gap between presses gives each its own timestamp.
    for (const d of '123#') {
      user.sendDtmf(d);
      await sleep(120);
    }
    await rt.until(() => conn.seededItems.length >= 2, 8000, 'keypad input at the AI');
    await sleep(300);
    expect(conn.seededItems).toHaveLength(2);
    expect(conn.seededItems[1]).toMatchObject({ type: 'message', role: 'user' });
    expect(JSON.stringify(conn.seededItems[1])).toContain('keypad: 123"');
    expect(call.transcript.some((t) => t.role === 'caller' && t.text === '[keypad] 123')).toBe(true);

    rt.configure({ toolCalls: { 1: { name: 'send_dtmf', arguments: { digits: '45' } } } });
    rt.callerTurn('press four five');
    await rt.until(() => conn.toolOutputs.length === 1, 5000, 'send_dtmf output');
    expect(JSON.parse(conn.toolOutputs[0]!.output)).toEqual({ ok: true, detail: 'sent 45' });
    await waitFor(
      () => user.receivedDigits() === '45' && user.receivedEvents().filter((e) => e.end).length === 6,
      5000,
      'telephone-events at the user',
    );

    const events = user.receivedEvents();
    const opus = user.arrivals.filter((a) => a.payloadType === 111);
    // One stream: the events ride the Opus SSRC.
    expect(new Set(events.map((e) => e.ssrc))).toEqual(new Set([opus[0]!.ssrc]));
    for (const digit of '45') {
      const ev = events.filter((e) => e.digit === digit);
      // Progress packets (the first with the marker), then the end packet three times, one timestamp.
      expect(new Set(ev.map((e) => e.timestamp)).size).toBe(1);
      expect(ev[0]!.marker).toBe(true);
      expect(ev.slice(1).every((e) => !e.marker)).toBe(true);
      const ends = ev.filter((e) => e.end);
      expect(ends).toHaveLength(3);
      // 160 ms in the negotiated telephone-event/8000 clock, not Opus's 48 kHz.
      expect(ends.map((e) => e.duration)).toEqual([1280, 1280, 1280]);
      const progress = ev.filter((e) => !e.end).map((e) => e.duration);
      expect(progress).toEqual([160, 320, 480, 640, 800, 960, 1120, 1280]);
    }
    // The second event starts later than the first by its length (in the 8 kHz clock).
    const t4 = events.find((e) => e.digit === '4')!.timestamp;
    const t5 = events.find((e) => e.digit === '5')!.timestamp;
    expect(((t5 - t4) >>> 0) / 160).toBe(8 + 3);
    // Sequence numbers stay contiguous across audio and events (no gap WhatsApp would count as loss).
    const all = user.arrivals.filter((a) => a.payloadType === 111 || a.payloadType === 126);
    const seqs = all.map((a) => a.seq).sort((a, b) => a - b);
    const span = seqs[seqs.length - 1]! - seqs[0]! + 1;
    expect(span - seqs.length).toBeLessThanOrEqual(2);

    // A hostile argument is refused before anything goes on the wire.
    rt.configure({ toolCalls: { 2: { name: 'send_dtmf', arguments: { digits: '9'.repeat(500) } } } });
    rt.callerTurn('press many');
    await rt.until(() => conn.toolOutputs.length === 2, 5000, 'refusal');
    expect(JSON.parse(conn.toolOutputs[1]!.output)).toMatchObject({ ok: false });
    await sleep(300);
    expect(user.receivedDigits()).toBe('45');
  }, 120_000);
});
