/**
 * RFC 4733 telephone-events (DTMF) for any RTP leg, whatever its audio clock. werift has no DTMF
 * support, and the SIP and WhatsApp legs need the same rules, so the event logic lives here once;
 * each leg only puts the packets on its own wire.
 */

/** RFC 4733 §3.2 event codes 0-15. */
export const DTMF_EVENTS = '0123456789*#ABCD';

/** Most digits one leg may queue: a runaway model cannot queue minutes of tones. */
const MAX_QUEUED = 64;
/** The end packet is sent three times (RFC 4733 §2.5.1.4), one per 20 ms step. */
const END_REPEATS = 3;
/** -10 dBm0, what phones send. */
const VOLUME = 10;

export function telephoneEventPayload(event: number, end: boolean, volume: number, duration: number): Buffer {
  const b = Buffer.alloc(4);
  b[0] = event;
  b[1] = (end ? 0x80 : 0) | (volume & 0x3f);
  b.writeUInt16BE(Math.min(duration, 0xffff), 2);
  return b;
}

export interface TelephoneEventPacket {
  payload: Buffer;
  /** In the event payload type's own clock (RFC 4733 §2.3: the event's start). */
  timestamp: number;
  /** Set on the first packet of an event (RFC 4733 §2.5.1.3). */
  marker: boolean;
}

interface Outgoing {
  event: number;
  frames: number;
  sent: number;
  endSent: number;
  timestamp: number;
}

/**
 * Turns queued digits into RFC 4733 packets, one per 20 ms step of the leg's send clock: progress
 * packets with a growing duration (the first with the marker bit), then the end packet three times,
 * all with the event's start timestamp. Durations and timestamps are in `clockRate` units (the
 * telephone-event payload's rate from the SDP, 8000 or 48000), not the audio codec's.
 */
export class TelephoneEventSender {
  private readonly queue: Outgoing[] = [];
  private readonly samplesPerStep: number;

  constructor(readonly clockRate: number) {
    this.samplesPerStep = Math.round(clockRate / 50);
  }

  /** Queue one digit; false for an unknown digit or a full queue. */
  enqueue(digit: string, durationMs: number): boolean {
    const event = digit.length === 1 ? DTMF_EVENTS.indexOf(digit.toUpperCase()) : -1;
    if (event < 0 || this.queue.length >= MAX_QUEUED) return false;
    this.queue.push({ event, frames: Math.max(2, Math.round(durationMs / 20)), sent: 0, endSent: 0, timestamp: 0 });
    return true;
  }

  get pending(): number {
    return this.queue.length;
  }

  /**
   * The packet for this 20 ms step (sent instead of audio while an event lasts), or undefined when
   * no event is playing. `now` is the leg's timestamp for this step in the event clock.
   */
  step(now: number): TelephoneEventPacket | undefined {
    const d = this.queue[0];
    if (!d) return undefined;
    if (d.sent === 0) d.timestamp = now >>> 0;
    if (d.sent < d.frames) {
      d.sent++;
      const payload = telephoneEventPayload(d.event, false, VOLUME, d.sent * this.samplesPerStep);
      return { payload, timestamp: d.timestamp, marker: d.sent === 1 };
    }
    const payload = telephoneEventPayload(d.event, true, VOLUME, d.frames * this.samplesPerStep);
    if (++d.endSent >= END_REPEATS) this.queue.shift();
    return { payload, timestamp: d.timestamp, marker: false };
  }

  clear(): void {
    this.queue.length = 0;
  }
}

/**
 * Reads received RFC 4733 packets: one digit per event (keyed by its timestamp), reported on the
 * event's first end packet, so the three repeated end packets give one digit.
 */
export class TelephoneEventReader {
  private lastTimestamp: number | undefined;

  constructor(private readonly clockRate: number) {}

  read(timestamp: number, payload: Buffer): { digit: string; durationMs: number } | undefined {
    if (payload.length < 4) return undefined;
    const end = (payload[1]! & 0x80) !== 0;
    if (!end || this.lastTimestamp === timestamp) return undefined;
    this.lastTimestamp = timestamp;
    const digit = DTMF_EVENTS[payload[0]!];
    if (!digit) return undefined;
    return { digit, durationMs: Math.round((payload.readUInt16BE(2) * 1000) / this.clockRate) };
  }
}
