import { tone } from './audio.js';

/** A WAV file's bytes: 16-bit PCM unless `bits`/`tag` say otherwise (for hostile-file tests). */
export function wavBytes(
  samples: Int16Array,
  o: { rate: number; channels?: number; bits?: number; tag?: number },
): Buffer {
  const channels = o.channels ?? 1;
  const bits = o.bits ?? 16;
  const data = Buffer.alloc(samples.length * 2);
  samples.forEach((v, i) => data.writeInt16LE(v, i * 2));
  const h = Buffer.alloc(44);
  h.write('RIFF', 0, 'ascii');
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVEfmt ', 8, 'ascii');
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(o.tag ?? 1, 20);
  h.writeUInt16LE(channels, 22);
  h.writeUInt32LE(o.rate, 24);
  h.writeUInt32LE((o.rate * channels * bits) / 8, 28);
  h.writeUInt16LE((channels * bits) / 8, 32);
  h.writeUInt16LE(bits, 34);
  h.write('data', 36, 'ascii');
  h.writeUInt32LE(data.length, 40);
  return Buffer.concat([h, data]);
}

/** A mono 16-bit WAV of a steady tone. */
export function toneWav(hz: number, rate: number, ms: number): Buffer {
  return wavBytes(tone(hz, rate, ms, 8000), { rate });
}
