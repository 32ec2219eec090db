import { spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * baresip as a real SIP phone calling the gateway: headless (no stdio module), its own config
 * dir, microphone = aufile (a WAV we generate), and the sndfile filter recording what it hears
 * (the decoded far-end audio) as WAV files in the same dir.
 */
export interface BaresipRun {
  code: number;
  log: string;
  /** Decoded audio the phone received (16-bit mono PCM at 8 kHz), or empty. */
  heard: Int16Array;
}

export function wav8k(samples: Int16Array): Buffer {
  const data = Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength);
  const h = Buffer.alloc(44);
  h.write('RIFF', 0);
  h.writeUInt32LE(36 + data.length, 4);
  h.write('WAVEfmt ', 8);
  h.writeUInt32LE(16, 16);
  h.writeUInt16LE(1, 20);
  h.writeUInt16LE(1, 22);
  h.writeUInt32LE(8000, 24);
  h.writeUInt32LE(16000, 28);
  h.writeUInt16LE(2, 32);
  h.writeUInt16LE(16, 34);
  h.write('data', 36);
  h.writeUInt32LE(data.length, 40);
  return Buffer.concat([h, data]);
}

function readWavPcm(buf: Buffer): Int16Array {
  let off = 12;
  while (off + 8 <= buf.length) {
    const id = buf.toString('ascii', off, off + 4);
    const size = buf.readUInt32LE(off + 4);
    if (id === 'data') {
      const len = Math.min(size, buf.length - off - 8);
      const copy = Buffer.from(buf.subarray(off + 8, off + 8 + len - (len % 2)));
      return new Int16Array(copy.buffer, copy.byteOffset, copy.length / 2);
    }
    off += 8 + size + (size % 2);
  }
  return new Int16Array(0);
}

export async function runBaresip(opts: {
  target: string;
  source: Int16Array;
  seconds: number;
  codec?: 'PCMA' | 'PCMU';
  dtmf?: string;
}): Promise<BaresipRun> {
  return baresip({
    listen: '127.0.0.1:0',
    account: `<sip:caller@127.0.0.1>;regint=0;audio_codecs=${opts.codec ?? 'PCMA'}`,
    source: opts.source,
    seconds: opts.seconds,
    command: `/dial ${opts.target}`,
  });
}

/**
 * baresip as the called phone: listens on 127.0.0.1:`port` with an account for `user` (the
 * Request-URI's user part the gateway dials) that answers at once (answermode=auto), sends
 * `source` and records what it hears; it quits after `seconds`.
 */
export function answerWithBaresip(opts: {
  user: string;
  port: number;
  source: Int16Array;
  seconds: number;
  codec?: 'PCMA' | 'PCMU';
}): Promise<BaresipRun> {
  return baresip({
    listen: `127.0.0.1:${opts.port}`,
    // Its SDP would otherwise name the default interface's address while it sends from 127.0.0.1:
    // the gateway's RTP source policy rightly drops that as foreign.
    config: ['net_interface 127.0.0.1'],
    account: `<sip:${opts.user}@127.0.0.1>;regint=0;answermode=auto;audio_codecs=${opts.codec ?? 'PCMA'}`,
    source: opts.source,
    seconds: opts.seconds,
  });
}

async function baresip(opts: {
  listen: string;
  account: string;
  source: Int16Array;
  seconds: number;
  command?: string;
  config?: string[];
}): Promise<BaresipRun> {
  const dir = mkdtempSync(join(tmpdir(), 'baresip-'));
  try {
    writeFileSync(join(dir, 'mic.wav'), wav8k(opts.source));
    writeFileSync(
      join(dir, 'config'),
      [
        'poll_method epoll',
        `sip_listen ${opts.listen}`,
        'module_path /usr/lib/baresip/modules',
        'module g711.so',
        'module aufile.so',
        'module sndfile.so',
        'module menu.so',
        'module account.so',
        `audio_source aufile,${join(dir, 'mic.wav')}`,
        `snd_path ${dir}`,
        'rtp_timeout 0',
        ...(opts.config ?? []),
        '',
      ].join('\n'),
    );
    writeFileSync(join(dir, 'accounts'), `${opts.account}\n`);
    writeFileSync(join(dir, 'contacts'), '\n');
    const args = ['-f', dir, '-t', String(opts.seconds), ...(opts.command ? ['-e', opts.command] : [])];
    const child = spawn('baresip', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (d: Buffer) => (log += d.toString()));
    child.stderr.on('data', (d: Buffer) => (log += d.toString()));
    const code = await new Promise<number>((resolve) => {
      const kill = setTimeout(() => child.kill('SIGKILL'), (opts.seconds + 5) * 1000);
      child.on('exit', (c) => {
        clearTimeout(kill);
        resolve(c ?? -1);
      });
    });
    const dec = readdirSync(dir).filter((f) => f.endsWith('.wav') && /dec/.test(f));
    const heard = dec.length ? readWavPcm(readFileSync(join(dir, dec[0]!))) : new Int16Array(0);
    return { code, log, heard };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
