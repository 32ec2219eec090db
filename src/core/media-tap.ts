import { Resampler } from './audio/resampler.js';

/**
 * Both directions of a call's audio for one 20 ms tick, as 16-bit PCM: `caller` is what the caller
 * said, `other` what the caller heard (the AI, hold audio, or the person after a bridged transfer).
 * Either is null on a tick where that side had nothing.
 */
export type MediaTap = (caller: Int16Array | null, other: Int16Array | null) => void;

/** Whatever carries the call's audio now (an AI Bridge, a hold Bridge, a LegBridge): one contract. */
export interface TapSource {
  /** The PCM rate of each side of the tap. */
  readonly tapRates: { readonly caller: number; readonly other: number };
  /** Hear both directions every tick; returns the function that stops it. */
  addTap(tap: MediaTap): () => void;
}

/** What a follower needs of the call: its current source and word when it changes. */
export interface TapSourceOwner {
  readonly tapSource: TapSource | undefined;
  on(event: 'tap_source', listener: (source: TapSource) => void): unknown;
  off(event: 'tap_source', listener: (source: TapSource) => void): unknown;
}

/**
 * Taps whatever carries the call's audio, and re-taps it each time the call moves to another bridge
 * (AI → hold → person, or back to the AI), delivering both sides at one fixed `rate` so a recording
 * or a listener stays one continuous stream across the change. Returns the function that stops it.
 */
export function followCallAudio(owner: TapSourceOwner, rate: number, tap: MediaTap): () => void {
  let untap: (() => void) | undefined;
  const follow = (source: TapSource): void => {
    untap?.();
    const toCaller = resamplerTo(source.tapRates.caller, rate);
    const toOther = resamplerTo(source.tapRates.other, rate);
    untap = source.addTap((caller, other) =>
      tap(caller && toCaller ? toCaller.process(caller) : caller, other && toOther ? toOther.process(other) : other),
    );
  };
  if (owner.tapSource) follow(owner.tapSource);
  owner.on('tap_source', follow);
  return () => {
    owner.off('tap_source', follow);
    untap?.();
    untap = undefined;
  };
}

function resamplerTo(from: number, to: number): Resampler | undefined {
  return from === to ? undefined : new Resampler(from, to);
}
