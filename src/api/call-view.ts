import type { Call } from '../core/call.js';
import { describeFormat } from '../core/audio/format.js';

/** The JSON shape of a call, live (GET /v1/calls/:id) and as stored when it ends (the call record). */
export function callView(call: Call) {
  const media = call.media;
  const legs = call.legs.map((leg) => ({
    id: leg.id,
    ...(call.parties.has(leg.id) ? { party: call.parties.get(leg.id) } : {}),
    codec: describeFormat(leg.format),
    quality: call.quality[leg.id] ?? leg.quality(),
  }));
  const ended = call.times.ended;
  return {
    id: call.id,
    state: call.state,
    front: call.info.front,
    trunk: call.info.trunk ?? null,
    direction: call.info.direction ?? 'inbound',
    from: call.info.from,
    to: call.info.to,
    externalId: call.info.externalId ?? null,
    route: call.route ?? null,
    times: call.times,
    durationMs: call.times.answered ? (ended ?? Date.now()) - call.times.answered : 0,
    endReason: call.endReason ?? null,
    legs,
    /** Transfer attempts: destination, mode, outcome (referred, bridged, busy, no_answer ...), the person's leg. */
    transfers: call.transfers,
    media: media
      ? {
          aiInput: describeFormat(media.session.inputFormat),
          aiOutput: describeFormat(media.session.outputFormat),
          passthrough: media.bridge.passthrough,
          muted: media.bridge.muted,
          levels: media.bridge.levels,
          stats: media.bridge.stats,
        }
      : null,
    /** Answer → first AI audio and caller turn → AI reply, gateway and AI shares (ms). */
    latency: call.latency.view(),
    /** The caller leg's jitter, loss, late packets and both levels over time (bounded samples). */
    qualityOverTime: call.qualityOverTime,
    transcript: call.transcript,
    toolCalls: call.toolCalls,
    /** Every signalling message (SIP ladder), bounded by limits.maxSignallingMessages. */
    signalling: call.signalling,
    /** Older transcript lines / tool calls let go to keep the call's memory bounded (limits.*). */
    dropped: { ...call.dropped },
  };
}

export type CallView = ReturnType<typeof callView>;
