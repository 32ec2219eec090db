import type { ConversationItem } from 'openai/resources/realtime/realtime';
import { createCodec, type FrameCodec } from '../../../src/core/audio/codecs.js';
import { pcmView } from '../../../src/core/audio/level.js';
import { EnergyVad } from '../../../src/core/audio/vad.js';
import { concat, dominantFrequency } from '../../support/audio.js';
import { formatOf } from './formats.js';
import { respond } from './responses.js';
import type { ClientEventOf, SessionConfig } from './schemas.js';
import { playbackCleared } from './sideband.js';
import { type Conn, id, type ServerContext, words } from './types.js';

/**
 * Caller audio and turns: decode each append, run the server VAD (speech_started after
 * `vadStartMs` of speech, speech_stopped after `silence_duration_ms` of quiet), then commit the
 * turn, transcribe it ("tone N Hz") and answer it.
 */

/** Frames of caller audio before speech_started that still belong to the utterance (~prefix_padding_ms). */
const PRE_ROLL_FRAMES = 15;

export function makeVad(ctx: ServerContext, session: SessionConfig): EnergyVad {
  const td = session.audio?.input?.turn_detection;
  const silenceMs = td && td.type === 'server_vad' ? (td.silence_duration_ms ?? 500) : 500;
  return new EnergyVad({ thresholdDbfs: ctx.opts.vadThresholdDbfs, minSpeechMs: ctx.opts.vadStartMs, silenceMs });
}

export function onAppend(ctx: ServerContext, c: Conn, ev: ClientEventOf<'input_audio_buffer.append'>): void {
  const bytes = Buffer.from(ev.audio, 'base64');
  c.rec.appendSizes.push(bytes.length);
  const fmt = formatOf(c.rec.session);
  if (fmt.type === 'audio/pcm' && bytes.length % 2 !== 0) {
    return ctx.violation(c, 'audio/pcm append with an odd number of bytes');
  }
  let pcm: Int16Array;
  if (fmt.type === 'audio/pcm') pcm = pcmView(Buffer.from(bytes));
  else {
    const codec: FrameCodec = createCodec(fmt.audio);
    // G.711 decodes byte by byte; decode any length in 160-byte steps.
    const parts: Int16Array[] = [];
    for (let i = 0; i < bytes.length; i += 160) {
      const chunk = Buffer.alloc(160, fmt.type === 'audio/pcmu' ? 0xff : 0xd5);
      bytes.copy(chunk, 0, i, Math.min(i + 160, bytes.length));
      parts.push(codec.decode(chunk).slice(0, Math.min(160, bytes.length - i)));
    }
    pcm = concat(parts);
  }
  c.rec.callerChunks.push(pcm);
  runVad(ctx, c, pcm, fmt.audio.sampleRate);
}

export function runVad(ctx: ServerContext, c: Conn, pcm: Int16Array, rate: number): void {
  const frame = rate / 50;
  const all = concat([c.pending, pcm]);
  let off = 0;
  for (; off + frame <= all.length; off += frame) {
    const f = all.subarray(off, off + frame);
    c.audioMs += 20;
    c.uncommittedMs += 20;
    const td = c.rec.session.audio?.input?.turn_detection;
    if (!td) {
      c.utterance.push(f.slice()); // manual turns: the client commits (and is answered on response.create)
      continue;
    }
    const ev = c.vad.process(f);
    if (ev === 'start') speechStarted(ctx, c, td.interrupt_response !== false);
    if (c.vad.speaking || ev === 'stop') c.utterance.push(f.slice());
    else {
      c.preRoll.push(f.slice());
      if (c.preRoll.length > PRE_ROLL_FRAMES) c.preRoll.shift();
    }
    if (ev === 'stop') {
      const itemId = c.speechItem ?? id('item');
      ctx.send(c, {
        type: 'input_audio_buffer.speech_stopped',
        event_id: '',
        audio_end_ms: c.audioMs,
        item_id: itemId,
      });
      commit(ctx, c, itemId);
      if (c.ws.readyState !== c.ws.OPEN) return;
    }
  }
  c.pending = all.slice(off);
}

export function speechStarted(ctx: ServerContext, c: Conn, interrupt: boolean): void {
  c.speechItem = id('item');
  c.utterance = c.preRoll;
  c.preRoll = [];
  ctx.send(c, {
    type: 'input_audio_buffer.speech_started',
    event_id: '',
    audio_start_ms: Math.max(0, c.audioMs - ctx.opts.vadStartMs),
    item_id: c.speechItem,
  });
  if (!interrupt) return;
  if (c.active) c.active.finish('cancelled', 'turn_detected');
  playbackCleared(ctx, c);
}

/** Caller turn complete: commit, transcribe ("tone N Hz"), answer (or misbehave as scripted). */
export function commit(ctx: ServerContext, c: Conn, itemId: string, said?: string): void {
  const utterance = concat(c.utterance);
  c.utterance = [];
  c.speechItem = undefined;
  c.uncommittedMs = 0;
  const turn = ++c.rec.turns;
  ctx.send(c, {
    type: 'input_audio_buffer.committed',
    event_id: '',
    item_id: itemId,
    previous_item_id: c.lastItemId,
  });
  const item: ConversationItem = {
    id: itemId,
    object: 'realtime.item',
    type: 'message',
    role: 'user',
    status: 'completed',
    content: [{ type: 'input_audio' }],
  };
  ctx.send(c, { type: 'conversation.item.added', event_id: '', item, previous_item_id: c.lastItemId });
  ctx.send(c, { type: 'conversation.item.done', event_id: '', item, previous_item_id: c.lastItemId });
  c.lastItemId = itemId;
  if (ctx.opts.dropOnTurn === turn && c.rec.index < ctx.opts.dropConnections) {
    c.ws.terminate();
    return;
  }
  const rate = formatOf(c.rec.session).audio.sampleRate;
  if (c.rec.session.audio?.input?.transcription) {
    const freq = utterance.length >= 256 ? Math.round(dominantFrequency(utterance, rate)) : 0;
    const text = said ?? `tone ${freq} Hz`;
    for (const delta of words(text)) {
      ctx.send(c, {
        type: 'conversation.item.input_audio_transcription.delta',
        event_id: '',
        item_id: itemId,
        content_index: 0,
        delta,
      });
    }
    ctx.send(c, {
      type: 'conversation.item.input_audio_transcription.completed',
      event_id: '',
      item_id: itemId,
      content_index: 0,
      transcript: text,
      usage: { type: 'duration', seconds: utterance.length / rate },
    });
  }
  const td = c.rec.session.audio?.input?.turn_detection;
  if (td && td.create_response !== false && !c.active) respond(ctx, c, ctx.opts.toolCalls?.[turn]);
}
