import opusModule from '@discordjs/opus';
import alawmulaw from 'alawmulaw';
import { GatewayError } from '../errors.js';
import { type AudioFormat, type Codec, frameBytes, samplesPerFrame } from './format.js';
import { pcmBuffer, pcmView } from './level.js';

const { OpusEncoder } = opusModule;

/**
 * One codec instance per call direction (Opus keeps state). `decode` yields PCM at `pcmRate`,
 * which for G.711/L16 is the wire rate and for Opus is whatever the far side of the converter
 * wants (libopus resamples internally for 8/12/16/24/48 kHz, so no extra resampler is needed).
 */
export interface FrameCodec {
  readonly codec: Codec;
  readonly pcmRate: number;
  decode(frame: Buffer): Int16Array;
  encode(pcm: Int16Array): Buffer;
  /** One 20 ms frame of silence in wire format. */
  silence(): Buffer;
  /**
   * A stand-in for the `lost`-th consecutive missing frame after `last`. G.711/L16 repeat the
   * last frame with a 6 dB/frame fade. Opus repeats the last packet once, then sends silence:
   * @discordjs/opus exposes no frame-sized PLC call (decoding an empty buffer asks libopus for
   * 120 ms of concealment and throws the decoder out of step), so we conceal at packet level.
   */
  conceal(last: Buffer | undefined, lost: number): Buffer;
}

const OPUS_RATES = new Set([8000, 12000, 16000, 24000, 48000]);

// libopus encoder CTLs (opus_defines.h). @discordjs/opus opens the encoder in AUDIO mode at
// complexity 10. We use complexity 5 (what WebRTC uses on mobile) and leave the mode choice to
// libopus: forcing OPUS_SIGNAL_VOICE pushes 24 kHz speech into SILK/hybrid, which measured here at
// 140 µs per frame against 64 µs for libopus's own choice, at the same bitrate (docs/performance.md).
const OPUS_SET_COMPLEXITY = 4010;
const OPUS_SET_INBAND_FEC = 4012;
const OPUS_SET_PACKET_LOSS_PERC = 4014;

function fade(pcm: Int16Array, lost: number): Int16Array {
  const gain = Math.pow(0.5, lost);
  const out = new Int16Array(pcm.length);
  for (let i = 0; i < pcm.length; i++) out[i] = Math.round(pcm[i]! * gain);
  return out;
}

function checkSize(frame: Buffer, expected: number, codec: Codec, callId?: string): void {
  if (frame.length !== expected) {
    throw new GatewayError(
      'bad_frame',
      `${codec} frame of ${frame.length} bytes, expected ${expected} (20 ms)`,
      callId,
    );
  }
}

class G711Codec implements FrameCodec {
  readonly pcmRate = 8000;
  private readonly law: typeof alawmulaw.alaw;
  constructor(
    readonly codec: 'pcmu' | 'pcma',
    private readonly callId?: string,
  ) {
    this.law = codec === 'pcmu' ? alawmulaw.mulaw : alawmulaw.alaw;
  }
  decode(frame: Buffer): Int16Array {
    checkSize(frame, 160, this.codec, this.callId);
    return this.law.decode(frame);
  }
  encode(pcm: Int16Array): Buffer {
    if (pcm.length !== 160) {
      throw new GatewayError('bad_frame', `expected 160 samples, got ${pcm.length}`, this.callId);
    }
    const bytes = this.law.encode(pcm);
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  }
  silence(): Buffer {
    return this.encode(new Int16Array(160));
  }
  conceal(last: Buffer | undefined, lost: number): Buffer {
    if (!last || lost > 5) return this.silence();
    return this.encode(fade(this.law.decode(last), lost));
  }
}

class L16Codec implements FrameCodec {
  readonly codec = 'l16' as const;
  private readonly bytes: number;
  constructor(
    readonly pcmRate: number,
    private readonly callId?: string,
  ) {
    this.bytes = frameBytes({ codec: 'l16', sampleRate: pcmRate, channels: 1 })!;
  }
  decode(frame: Buffer): Int16Array {
    checkSize(frame, this.bytes, 'l16', this.callId);
    return pcmView(frame);
  }
  encode(pcm: Int16Array): Buffer {
    return pcmBuffer(pcm);
  }
  silence(): Buffer {
    return Buffer.alloc(this.bytes);
  }
  conceal(last: Buffer | undefined, lost: number): Buffer {
    if (!last || lost > 5) return this.silence();
    return pcmBuffer(fade(pcmView(last), lost));
  }
}

class OpusCodec implements FrameCodec {
  readonly codec = 'opus' as const;
  private readonly opus: InstanceType<typeof OpusEncoder>;
  private readonly frameSamples: number;
  private silencePacket: Buffer | undefined;
  constructor(
    readonly pcmRate: number,
    private readonly callId?: string,
  ) {
    if (!OPUS_RATES.has(pcmRate)) {
      throw new GatewayError('unsupported_conversion', `Opus cannot run at ${pcmRate} Hz`, callId);
    }
    this.opus = new OpusEncoder(pcmRate, 1);
    this.opus.applyEncoderCTL(OPUS_SET_COMPLEXITY, 5);
    // In-band FEC (whenever libopus picks SILK/hybrid) lets the far end recover single losses;
    // WhatsApp advertises useinbandfec=1.
    this.opus.applyEncoderCTL(OPUS_SET_INBAND_FEC, 1);
    this.opus.applyEncoderCTL(OPUS_SET_PACKET_LOSS_PERC, 5);
    this.frameSamples = samplesPerFrame({ codec: 'l16', sampleRate: pcmRate, channels: 1 });
  }
  decode(frame: Buffer): Int16Array {
    if (frame.length === 0) throw new GatewayError('bad_frame', 'empty Opus packet', this.callId);
    try {
      return pcmView(this.opus.decode(frame));
    } catch (err) {
      throw new GatewayError('bad_frame', `Opus decode failed: ${(err as Error).message}`, this.callId);
    }
  }
  encode(pcm: Int16Array): Buffer {
    if (pcm.length !== this.frameSamples) {
      throw new GatewayError('bad_frame', `expected ${this.frameSamples} samples, got ${pcm.length}`, this.callId);
    }
    return this.opus.encode(pcmBuffer(pcm));
  }
  silence(): Buffer {
    // A real encoded silent frame (not DTX): WhatsApp wants a packet every 20 ms.
    this.silencePacket ??= new OpusCodec(this.pcmRate).encode(new Int16Array(this.frameSamples));
    return this.silencePacket;
  }
  conceal(last: Buffer | undefined, lost: number): Buffer {
    return last && lost === 1 ? last : this.silence();
  }
}

/** Build the codec for a wire format; `pcmRate` only matters for Opus (decode/encode rate). */
export function createCodec(format: AudioFormat, pcmRate = format.sampleRate, callId?: string): FrameCodec {
  switch (format.codec) {
    case 'pcmu':
    case 'pcma':
      if (format.sampleRate !== 8000) {
        throw new GatewayError('unsupported_conversion', `G.711 runs at 8000 Hz, not ${format.sampleRate}`, callId);
      }
      return new G711Codec(format.codec, callId);
    case 'l16':
      return new L16Codec(format.sampleRate, callId);
    case 'opus':
      return new OpusCodec(pcmRate, callId);
    default:
      throw new GatewayError('unknown_codec', `unknown codec "${String((format as AudioFormat).codec)}"`, callId);
  }
}
