// Waveform player for a call's recording: the stereo WAV (caller left, AI right) drawn on a canvas
// from the bytes fetched with the session cookie, played by an <audio> element that seeks with
// Range requests. A click on the waveform seeks; a playhead follows playback.
import { el } from '/console/dom.js';

/** Recordings larger than this are played but not drawn (decoding holds the whole file in memory). */
const MAX_DRAW_BYTES = 64 * 1024 * 1024;
const HEIGHT = 160;

/** Per pixel column: the min and max sample of each channel (a stereo peak envelope). */
function envelope(buffer, columns) {
  const channels = [];
  for (let c = 0; c < Math.min(2, buffer.numberOfChannels); c++) {
    const data = buffer.getChannelData(c);
    const per = Math.max(1, Math.floor(data.length / columns));
    const mins = new Float32Array(columns);
    const maxs = new Float32Array(columns);
    for (let x = 0; x < columns; x++) {
      let lo = 0;
      let hi = 0;
      const end = Math.min(data.length, (x + 1) * per);
      for (let i = x * per; i < end; i++) {
        const v = data[i];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      mins[x] = lo;
      maxs[x] = hi;
    }
    channels.push({ mins, maxs });
  }
  return channels;
}

function draw(canvas, env, playedFraction) {
  const g = canvas.getContext('2d');
  const { width, height } = canvas;
  g.fillStyle = '#fafafa';
  g.fillRect(0, 0, width, height);
  const lane = height / env.length;
  const colours = ['#2a9d5b', '#3a6fd8']; // caller, AI: as the live meters
  env.forEach(({ mins, maxs }, c) => {
    const mid = lane * c + lane / 2;
    g.fillStyle = colours[c];
    for (let x = 0; x < width; x++) {
      const top = mid - maxs[x] * (lane / 2);
      const bottom = mid - mins[x] * (lane / 2);
      g.fillRect(x, top, 1, Math.max(1, bottom - top));
    }
  });
  g.fillStyle = 'rgba(0, 0, 0, 0.08)';
  g.fillRect(0, 0, width * playedFraction, height);
  g.fillStyle = '#d62728';
  g.fillRect(Math.round(width * playedFraction), 0, 1, height);
}

/**
 * Shows the player for `url` in `host` when a recording exists. Resolves with what it did: 'none'
 * (no recording), 'empty' (a header only), 'played-only' (too large to draw), or 'drawn'.
 */
export async function waveformPlayer(host, url) {
  // One byte first: whether there is a recording, and (Content-Range) how large it is.
  const probe = await fetch(url, { headers: { range: 'bytes=0-0' } });
  if (probe.status !== 206 && probe.status !== 200) return 'none';
  const total = Number(probe.headers.get('content-range')?.split('/')[1] ?? probe.headers.get('content-length'));
  const audio = el('audio');
  audio.controls = true;
  audio.preload = 'metadata';
  audio.src = url;
  const legend = el('p', 'caller (top, green) · AI (bottom, blue) · click to seek', 'muted');
  host.replaceChildren(audio, legend);
  if (!(total > 44)) {
    legend.textContent = 'the recording holds no audio';
    return 'empty';
  }
  if (total > MAX_DRAW_BYTES) {
    legend.textContent = `${Math.round(total / 1e6)} MB: too large to draw here; play it or download it`;
    return 'played-only';
  }
  const res = await fetch(url);
  if (!res.ok) return 'played-only';
  const actx = new OfflineAudioContext(1, 1, 8000);
  const buffer = await actx.decodeAudioData(await res.arrayBuffer());
  const canvas = el('canvas', undefined, 'waveform');
  canvas.width = Math.max(300, Math.min(1200, host.clientWidth || 900));
  canvas.height = HEIGHT;
  canvas.title = `${buffer.duration.toFixed(1)} s`;
  host.prepend(canvas);
  const env = envelope(buffer, canvas.width);
  const fraction = () => (buffer.duration ? Math.min(1, audio.currentTime / buffer.duration) : 0);
  draw(canvas, env, 0);
  canvas.onclick = (e) => {
    const x = e.offsetX / canvas.clientWidth;
    audio.currentTime = x * buffer.duration;
    draw(canvas, env, fraction());
  };
  let frame;
  const follow = () => {
    draw(canvas, env, fraction());
    frame = audio.paused ? undefined : requestAnimationFrame(follow);
  };
  audio.addEventListener('play', () => (frame ??= requestAnimationFrame(follow)));
  audio.addEventListener('seeked', () => draw(canvas, env, fraction()));
  return 'drawn';
}
