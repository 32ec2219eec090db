import { createCodec, type FrameCodec } from '../../../src/core/audio/codecs.js';
import { type AudioFormat, l16, PCMA_8K, PCMU_8K } from '../../../src/core/audio/format.js';
import { pcmBuffer } from '../../../src/core/audio/level.js';
import type { SessionConfig } from './schemas.js';

/** The Realtime stand-in's audio formats: what a session's format types mean, and encoding answers. */

/** The whole answer in the session's output format (G.711 frame by frame; PCM16 little-endian). */
export function encodeAll(pcm: Int16Array, format: AudioFormat): Buffer {
  if (format.codec === 'l16') return Buffer.from(pcmBuffer(pcm));
  const enc: FrameCodec = createCodec(format);
  const parts: Buffer[] = [];
  for (let j = 0; j < pcm.length; j += 160) {
    const f = new Int16Array(160);
    f.set(pcm.subarray(j, Math.min(j + 160, pcm.length)));
    parts.push(enc.encode(f));
  }
  return Buffer.concat(parts);
}

export function formatOf(session: SessionConfig): {
  type: 'audio/pcm' | 'audio/pcmu' | 'audio/pcma';
  audio: AudioFormat;
} {
  const t = session.audio?.input?.format?.type ?? 'audio/pcm';
  if (t === 'audio/pcmu') return { type: t, audio: PCMU_8K };
  if (t === 'audio/pcma') return { type: t, audio: PCMA_8K };
  return { type: 'audio/pcm', audio: l16(24000) };
}

export function outputFormatOf(session: SessionConfig): AudioFormat {
  const t = session.audio?.output?.format?.type ?? 'audio/pcm';
  return t === 'audio/pcmu' ? PCMU_8K : t === 'audio/pcma' ? PCMA_8K : l16(24000);
}
