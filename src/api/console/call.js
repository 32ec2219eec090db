// One call's detail: timeline, SIP ladder (every SIP message, in order), transcript, quality.
import { listenControls } from '/console/call-listen.js';
import { el } from '/console/dom.js';
import { waveformPlayer } from '/console/waveform.js';
import uPlot from '/vendor/uplot/uPlot.esm.js';

/** Quality over time (sampled by the gateway every api.systemSampleMs, bounded per call) as two uPlot charts. */
function chartQuality(samples) {
  if (samples.length < 2) return;
  const t = samples.map((s) => s.at / 1000);
  const opts = (title, labels) => ({
    title,
    width: Math.min(900, document.body.clientWidth - 20),
    height: 180,
    series: [{}, ...labels.map(([label, stroke]) => ({ label, stroke, width: 1.5 }))],
  });
  new uPlot(
    opts('Caller leg: jitter (ms), lost and late packets', [
      ['jitter ms', '#1f77b4'],
      ['lost', '#d62728'],
      ['late', '#ff7f0e'],
    ]),
    [t, samples.map((s) => s.jitterMs), samples.map((s) => s.lost), samples.map((s) => s.late)],
    document.getElementById('quality-chart'),
  );
  new uPlot(
    opts('Levels (dBFS)', [
      ['caller', '#2ca02c'],
      ['AI', '#9467bd'],
    ]),
    [t, samples.map((s) => s.callerDb), samples.map((s) => s.aiDb)],
    document.getElementById('levels-chart'),
  );
  window.qualityPoints = samples.length; // tests read it
}

/** One row per message, an arrow by direction; a click shows the message as sent or received. */
function drawMessages(body, messages, cls) {
  body.replaceChildren();
  for (const m of messages) {
    const arrow = m.direction === 'out' ? `—— ${m.summary} ——▶` : `◀—— ${m.summary} ——`;
    const raw = el('pre', m.raw);
    raw.hidden = true;
    const cell = el('td', [el('span', arrow), raw], 'arrow');
    cell.onclick = () => (raw.hidden = !raw.hidden);
    const tr = el('tr', [el('td', time(m.at)), el('td', 'gateway'), cell, el('td', m.peer)], m.direction);
    tr.classList.add(cls);
    tr.dataset.summary = m.summary;
    body.append(tr);
  }
}

const id = new URLSearchParams(location.search).get('id') ?? '';
const time = (t) => new Date(t).toISOString().slice(11, 23);

async function load() {
  const res = await fetch('/v1/calls/' + encodeURIComponent(id));
  if (!res.ok) {
    document.getElementById('summary').textContent =
      res.status === 401 ? 'sign in on the live page first' : 'no call ' + id;
    return;
  }
  const c = await res.json();
  document.getElementById('title').textContent = 'Call ' + c.id.slice(0, 8);
  document.getElementById('summary').textContent =
    `${c.front}${c.trunk ? ' / ' + c.trunk : ''} · ${c.from} → ${c.to} · route ${c.route ?? '—'} · ${c.state}`;

  if (c.state !== 'ended') listenControls(document.getElementById('listen'), c.id);

  const events = [];
  for (const [state, at] of Object.entries(c.times)) events.push({ at, what: state });
  for (const t of c.toolCalls ?? [])
    events.push({
      at: t.at ?? t.startedAt ?? 0,
      what: `tool ${t.name}(${JSON.stringify(t.arguments ?? t.args ?? {})})`,
    });
  if (c.endReason && c.times.ended)
    events.push({ at: c.times.ended, what: `end: ${c.endReason.by} / ${c.endReason.cause}` });
  events.sort((a, b) => a.at - b.at);
  document
    .getElementById('timeline')
    .replaceChildren(...events.map((e) => el('tr', [el('td', time(e.at)), el('td', e.what)])));

  // SIP messages draw the ladder; a WhatsApp call's webhooks (in) and Graph requests (out) get their own.
  const all = c.signalling ?? [];
  drawMessages(
    document.getElementById('ladder'),
    all.filter((m) => m.protocol !== 'whatsapp'),
    'ladder-msg',
  );
  const wa = all.filter((m) => m.protocol === 'whatsapp');
  document.getElementById('whatsapp-section').hidden = wa.length === 0;
  drawMessages(document.getElementById('whatsapp'), wa, 'wa-msg');
  if (c.dropped?.signalling)
    document.getElementById('ladder').append(el('tr', [el('td', `${c.dropped.signalling} messages not kept`)]));

  document
    .getElementById('transcript')
    .replaceChildren(
      ...(c.transcript ?? []).map((t) => el('tr', [el('td', time(t.at)), el('td', t.role), el('td', t.text)])),
    );
  // The recording (if any): a waveform player (fetched with the session cookie; the player seeks with Range).
  window.waveform = await waveformPlayer(
    document.getElementById('recording'),
    '/v1/calls/' + encodeURIComponent(id) + '/recording',
  ).catch((err) => 'failed: ' + err.message);
  chartQuality(c.qualityOverTime ?? []);
  document.getElementById('quality').textContent = JSON.stringify({ legs: c.legs, latency: c.latency }, null, 2);
}
load();
