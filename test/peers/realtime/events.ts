import type { ConversationItem, RealtimeSessionCreateRequest } from 'openai/resources/realtime/realtime';
import { respond } from './responses.js';
import { type ClientEventOf, clientEventSchemas, type ClientEventType } from './schemas.js';
import { commit, makeVad, onAppend } from './turns.js';
import { type Conn, id, type ServerContext } from './types.js';

/**
 * Client events: each is checked against the published shapes (schemas.ts), recorded, and
 * dispatched; the conversation-item and session events are answered here.
 */

function stripAudio(ev: Record<string, unknown>): Record<string, unknown> {
  if (typeof ev.audio === 'string') return { ...ev, audio: `<${Buffer.from(ev.audio, 'base64').length} bytes>` };
  return ev;
}

export function onMessage(ctx: ServerContext, c: Conn, text: string, isBinary: boolean): void {
  if (isBinary) return ctx.violation(c, 'binary frame (the API takes JSON text frames)');
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return ctx.violation(c, `not JSON: ${text.slice(0, 80)}`);
  }
  const type = (raw as { type?: unknown } | null)?.type;
  if (typeof type !== 'string' || !(type in clientEventSchemas)) {
    return ctx.violation(c, `unknown client event type ${JSON.stringify(type)}`);
  }
  const schema = clientEventSchemas[type as ClientEventType];
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ');
    return ctx.violation(c, `${type}: ${issues}`, (raw as { event_id?: string }).event_id);
  }
  c.rec.received.push({ type, at: performance.now(), event: stripAudio(parsed.data as Record<string, unknown>) });
  try {
    dispatch(ctx, c, type as ClientEventType, parsed.data);
  } catch (err) {
    ctx.violation(c, `${type}: ${(err as Error).message}`);
  }
}

function dispatch(ctx: ServerContext, c: Conn, type: ClientEventType, ev: unknown): void {
  switch (type) {
    case 'session.update':
      return onSessionUpdate(ctx, c, ev as ClientEventOf<'session.update'>);
    case 'input_audio_buffer.append':
      return onAppend(ctx, c, ev as ClientEventOf<'input_audio_buffer.append'>);
    case 'input_audio_buffer.commit':
      if (c.uncommittedMs < 100) return ctx.sendError(c, 'input_audio_buffer_commit_empty', 'buffer too small');
      return commit(ctx, c, c.speechItem ?? id('item'));
    case 'input_audio_buffer.clear':
      c.uncommittedMs = 0;
      c.utterance = [];
      return ctx.send(c, { type: 'input_audio_buffer.cleared', event_id: '' });
    case 'conversation.item.create':
      return onItemCreate(ctx, c, ev as ClientEventOf<'conversation.item.create'>);
    case 'conversation.item.truncate':
      return onTruncate(ctx, c, ev as ClientEventOf<'conversation.item.truncate'>);
    case 'conversation.item.delete': {
      const e = ev as ClientEventOf<'conversation.item.delete'>;
      return ctx.send(c, { type: 'conversation.item.deleted', event_id: '', item_id: e.item_id });
    }
    case 'conversation.item.retrieve':
      return ctx.sendError(c, 'not_supported', 'conversation.item.retrieve is not simulated');
    case 'response.create': {
      const e = ev as ClientEventOf<'response.create'>;
      if (c.active) {
        return ctx.sendError(
          c,
          'conversation_already_has_active_response',
          'Conversation already has an active response in progress',
          e.event_id,
        );
      }
      return respond(ctx, c, undefined, e.response?.instructions);
    }
    case 'response.cancel': {
      const e = ev as ClientEventOf<'response.cancel'>;
      if (!c.active || (e.response_id && e.response_id !== c.active.answer.responseId)) {
        return ctx.sendError(c, 'response_cancel_not_active', 'Cancellation failed: no active response found');
      }
      return c.active.finish('cancelled', 'client_cancelled');
    }
  }
}

function onSessionUpdate(ctx: ServerContext, c: Conn, ev: ClientEventOf<'session.update'>): void {
  const s = ev.session;
  const prev = c.rec.session;
  const hadAudio = c.rec.answers.some((a) => a.audioMs > 0);
  if (hadAudio && s.audio?.output?.voice && s.audio.output.voice !== prev.audio?.output?.voice) {
    return ctx.sendError(c, 'cannot_update_voice', 'Cannot update a conversation voice once audio has been sent');
  }
  if (s.model && prev.model && c.rec.model && s.model !== c.rec.model) {
    return ctx.sendError(c, 'cannot_update_model', 'The session model cannot be changed');
  }
  c.rec.session = {
    ...prev,
    ...s,
    audio: {
      input: { ...prev.audio?.input, ...s.audio?.input },
      output: { ...prev.audio?.output, ...s.audio?.output },
    },
  };
  c.vad = makeVad(ctx, c.rec.session);
  ctx.send(c, {
    type: 'session.updated',
    event_id: '',
    session: c.rec.session as RealtimeSessionCreateRequest,
  });
}

function onItemCreate(ctx: ServerContext, c: Conn, ev: ClientEventOf<'conversation.item.create'>): void {
  const item = ev.item;
  if (item.type === 'function_call_output') {
    if (!c.callIds.has(item.call_id)) {
      return ctx.sendError(c, 'invalid_call_id', `no function call with call_id ${item.call_id}`, ev.event_id);
    }
    c.rec.toolOutputs.push({ call_id: item.call_id, output: item.output });
  } else {
    c.rec.seededItems.push(item);
  }
  const full = {
    ...item,
    id: item.id ?? id('item'),
    object: 'realtime.item',
    status: 'completed',
  } as ConversationItem;
  ctx.send(c, { type: 'conversation.item.added', event_id: '', item: full, previous_item_id: c.lastItemId });
  ctx.send(c, { type: 'conversation.item.done', event_id: '', item: full, previous_item_id: c.lastItemId });
  c.lastItemId = full.id!;
}

function onTruncate(ctx: ServerContext, c: Conn, ev: ClientEventOf<'conversation.item.truncate'>): void {
  const sentMs = c.audioItems.get(ev.item_id);
  if (sentMs === undefined) {
    return ctx.sendError(c, 'item_not_found', `no assistant audio item ${ev.item_id}`, ev.event_id);
  }
  if (ev.audio_end_ms > sentMs) {
    return ctx.sendError(
      c,
      'invalid_value',
      `audio_end_ms ${ev.audio_end_ms} is beyond the item's ${sentMs} ms of audio`,
      ev.event_id,
    );
  }
  c.rec.truncates.push(ev);
  ctx.send(c, {
    type: 'conversation.item.truncated',
    event_id: '',
    item_id: ev.item_id,
    content_index: 0,
    audio_end_ms: ev.audio_end_ms,
  });
}
