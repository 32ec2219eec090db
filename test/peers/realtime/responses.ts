import type { ConversationItem } from 'openai/resources/realtime/realtime';
import { tone } from '../../support/audio.js';
import { encodeAll, outputFormatOf } from './formats.js';
import { playbackEnds, playbackStarts } from './sideband.js';
import { seededRandom, sendTimes, splitAudio, type StreamShape } from './stream.js';
import {
  type ActiveResponse,
  type AnswerRecord,
  type Conn,
  id,
  type RealtimeTestServerOptions,
  type ScriptedToolCall,
  type ServerContext,
  words,
} from './types.js';

/**
 * Answers: each response is a tone of 400 + 200·n Hz (n = response number on the connection),
 * streamed as irregular/bursty deltas with its transcript, then any scripted tool call; or a
 * failed/incomplete response with no audio when the options say so.
 */

/** A response that ends at once as failed/incomplete, with no audio (quota, rate limit, filter). */
function failResponse(
  ctx: ServerContext,
  c: Conn,
  answer: AnswerRecord,
  fail: NonNullable<RealtimeTestServerOptions['failResponses']>,
): void {
  answer.status = fail.status;
  const response = {
    id: answer.responseId,
    object: 'realtime.response' as const,
    output: [],
    output_modalities: ['audio' as const],
  };
  ctx.send(c, { type: 'response.created', event_id: '', response: { ...response, status: 'in_progress' } });
  const status_details =
    fail.status === 'failed'
      ? {
          type: 'failed' as const,
          error: { type: 'invalid_request_error', code: fail.code ?? 'rate_limit_exceeded' },
        }
      : { type: 'incomplete' as const, reason: fail.reason ?? 'content_filter' };
  ctx.later(c, 20, () =>
    ctx.send(c, {
      type: 'response.done',
      event_id: '',
      response: { ...response, status: fail.status, status_details },
    }),
  );
}

/** One response: a tone (unless the script calls a tool straight away), then the scripted tool call. */
export function respond(ctx: ServerContext, c: Conn, tool: ScriptedToolCall | undefined, instructions?: string): void {
  const n = c.rec.answers.length + 1;
  const freq = 400 + 200 * n;
  const responseId = id('resp');
  const withAudio = !tool || tool.audioFirst === true;
  const itemId = withAudio ? id('item') : undefined;
  const answer: AnswerRecord = {
    responseId,
    itemId,
    freq,
    audioMs: 0,
    deltaBytes: [],
    firstDeltaAt: undefined,
    lastDeltaAt: undefined,
    status: 'in_progress',
    instructions,
    toolCallId: undefined,
  };
  c.rec.answers.push(answer);
  const fail = ctx.opts.failResponses;
  if (fail && (fail.count === undefined || c.rec.answers.length <= fail.count))
    return failResponse(ctx, c, answer, fail);
  const output: ConversationItem[] = [];
  const transcript = instructions ?? `turn ${n} tone ${freq} Hz`;
  ctx.send(c, {
    type: 'response.created',
    event_id: '',
    response: {
      id: responseId,
      object: 'realtime.response',
      status: 'in_progress',
      output: [],
      output_modalities: ['audio'],
    },
  });
  sendRateLimits(ctx, c);

  const format = outputFormatOf(c.rec.session);
  const bytesPerMs = format.codec === 'l16' ? 48 : 8;
  const shape: StreamShape = {
    chunks: ctx.opts.chunks ?? 'fixed',
    pace: ctx.opts.pace ?? 'bursts',
    speedup: ctx.opts.speedup,
    chunkMs: ctx.opts.chunkMs,
    seed: ctx.opts.seed ?? 1,
  };
  let chunks: Buffer[] = [];
  if (withAudio) {
    chunks = splitAudio(
      encodeAll(tone(freq, format.sampleRate, ctx.opts.toneMs, 8000), format),
      bytesPerMs,
      shape,
      seededRandom(shape.seed + n),
    );
    const item: ConversationItem = {
      id: itemId,
      object: 'realtime.item',
      type: 'message',
      role: 'assistant',
      status: 'in_progress',
      content: [],
    };
    ctx.send(c, {
      type: 'response.output_item.added',
      event_id: '',
      response_id: responseId,
      output_index: 0,
      item,
    });
    ctx.send(c, { type: 'conversation.item.added', event_id: '', item, previous_item_id: c.lastItemId });
    c.lastItemId = itemId!;
    c.audioItems.set(itemId!, 0);
    ctx.send(c, {
      type: 'response.content_part.added',
      event_id: '',
      response_id: responseId,
      item_id: itemId!,
      output_index: 0,
      content_index: 0,
      part: { type: 'audio', transcript: '' },
    });
  }

  const closeAudio = (status: 'completed' | 'cancelled') => {
    if (!withAudio) return;
    const said = status === 'completed' ? transcript : transcript.slice(0, 8);
    const common = { event_id: '', response_id: responseId, item_id: itemId!, output_index: 0, content_index: 0 };
    ctx.send(c, { type: 'response.output_audio.done', ...common });
    ctx.send(c, { type: 'response.output_audio_transcript.done', ...common, transcript: said });
    ctx.send(c, { type: 'response.content_part.done', ...common, part: { type: 'audio', transcript: said } });
    const done: ConversationItem = {
      id: itemId,
      object: 'realtime.item',
      type: 'message',
      role: 'assistant',
      status: status === 'completed' ? 'completed' : 'incomplete',
      content: [{ type: 'output_audio', transcript: said }],
    };
    output.push(done);
    ctx.send(c, {
      type: 'response.output_item.done',
      event_id: '',
      response_id: responseId,
      output_index: 0,
      item: done,
    });
    ctx.send(c, { type: 'conversation.item.done', event_id: '', item: done });
  };
  const callTool = () => {
    if (!tool) return;
    const callId = id('call');
    const fcItem = id('item');
    const args = JSON.stringify(tool.arguments);
    const outputIndex = withAudio ? 1 : 0;
    c.callIds.add(callId);
    answer.toolCallId = callId;
    const pending: ConversationItem = {
      id: fcItem,
      object: 'realtime.item',
      type: 'function_call',
      status: 'in_progress',
      name: tool.name,
      call_id: callId,
      arguments: '',
    };
    ctx.send(c, {
      type: 'response.output_item.added',
      event_id: '',
      response_id: responseId,
      output_index: outputIndex,
      item: pending,
    });
    ctx.send(c, { type: 'conversation.item.added', event_id: '', item: pending, previous_item_id: c.lastItemId });
    c.lastItemId = fcItem;
    const common = {
      event_id: '',
      response_id: responseId,
      item_id: fcItem,
      output_index: outputIndex,
      call_id: callId,
    };
    ctx.send(c, { type: 'response.function_call_arguments.delta', ...common, delta: args });
    ctx.send(c, { type: 'response.function_call_arguments.done', ...common, name: tool.name, arguments: args });
    const done: ConversationItem = { ...pending, status: 'completed', arguments: args };
    output.push(done);
    ctx.send(c, {
      type: 'response.output_item.done',
      event_id: '',
      response_id: responseId,
      output_index: outputIndex,
      item: done,
    });
    ctx.send(c, { type: 'conversation.item.done', event_id: '', item: done });
  };

  let next = 0;
  const active: ActiveResponse = {
    answer,
    timer: undefined,
    finish: (status, reason) => {
      if (c.active !== active) return;
      if (active.timer) clearTimeout(active.timer);
      c.active = undefined;
      sendTranscript(words(transcript).length);
      closeAudio(status);
      if (status === 'completed') callTool();
      answer.status = status;
      ctx.send(c, {
        type: 'response.done',
        event_id: '',
        response: {
          id: responseId,
          object: 'realtime.response',
          status,
          ...(reason ? { status_details: { type: 'cancelled', reason } } : {}),
          output,
          output_modalities: ['audio'],
          usage: { total_tokens: 0, input_tokens: 0, output_tokens: 0 },
        },
      });
      playbackEnds(ctx, c, responseId, answer.audioMs);
    },
  };
  c.active = active;
  // The transcript streams alongside the audio: its words spread over the deltas.
  const said = words(transcript);
  let wordsSent = 0;
  const sendTranscript = (upTo: number) => {
    if (!withAudio) return;
    for (; wordsSent < Math.min(upTo, said.length); wordsSent++) {
      ctx.send(c, {
        type: 'response.output_audio_transcript.delta',
        event_id: '',
        response_id: responseId,
        item_id: itemId!,
        output_index: 0,
        content_index: 0,
        delta: said[wordsSent]!,
      });
    }
  };
  const due = sendTimes(
    chunks.map((b) => b.length),
    bytesPerMs,
    shape,
  );
  let startAt = 0;
  const pump = () => {
    active.timer = undefined;
    if (c.active !== active) return;
    const elapsed = performance.now() - startAt;
    for (; next < chunks.length && due[next]! <= elapsed + 1; next++) {
      const data = chunks[next]!;
      const now = performance.now();
      answer.firstDeltaAt ??= now;
      answer.lastDeltaAt = now;
      answer.audioMs += data.length / bytesPerMs;
      answer.deltaBytes.push(data.length);
      c.audioItems.set(itemId!, answer.audioMs);
      if (c.rec.callId !== null) {
        // A SIP call's audio goes over SIP, not the sideband: OpenAI reports its own playout.
        playbackStarts(ctx, c, responseId);
      } else {
        ctx.send(c, {
          type: 'response.output_audio.delta',
          event_id: '',
          response_id: responseId,
          item_id: itemId!,
          output_index: 0,
          content_index: 0,
          delta: data.toString('base64'),
        });
      }
      sendTranscript(Math.ceil(((next + 1) / chunks.length) * said.length));
    }
    if (next >= chunks.length) active.finish('completed');
    else active.timer = setTimeout(pump, Math.max(0, due[next]! - (performance.now() - startAt)));
  };
  // A little "thinking" time before the first audio, like the real service.
  active.timer = setTimeout(() => {
    startAt = performance.now();
    pump();
  }, 30);
}

function sendRateLimits(ctx: ServerContext, c: Conn): void {
  const n = c.rec.answers.length;
  ctx.send(c, {
    type: 'rate_limits.updated',
    event_id: '',
    rate_limits: [
      { name: 'requests', limit: 5000, remaining: 5000 - n, reset_seconds: 0.012 },
      { name: 'tokens', limit: 40_000, remaining: 40_000 - 300 * n, reset_seconds: 0.45 },
    ],
  });
}
