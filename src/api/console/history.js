// Call history from the SQLite records (GET /v1/calls?ended=true&...), searchable and paginated.
// The session cookie authenticates the reads. Untrusted data is only ever set as textContent.
import { el } from '/console/dom.js';

const PAGE = 25;
const form = document.getElementById('search');
let offset = 0;

async function load() {
  const q = new URLSearchParams({ ended: 'true', limit: String(PAGE), offset: String(offset) });
  for (const [k, v] of new FormData(form)) if (v) q.set(k, String(v));
  const res = await fetch('/v1/calls?' + q);
  const body = document.getElementById('results');
  body.replaceChildren();
  if (!res.ok) {
    body.append(el('tr', [el('td', res.status === 401 ? 'sign in on the live page first' : 'error ' + res.status)]));
    return;
  }
  const { calls } = await res.json();
  for (const c of calls) {
    const link = el('a', c.id.slice(0, 8));
    link.href = '/console/call.html?id=' + encodeURIComponent(c.id);
    const tr = el('tr', [
      el('td', new Date(c.times.ended).toLocaleString()),
      el('td', c.front + (c.trunk ? ' / ' + c.trunk : '')),
      el('td', c.from + ' → ' + c.to),
      el('td', c.route ?? ''),
      el('td', Math.round(c.durationMs / 1000) + ' s'),
      el('td', c.endReason ? c.endReason.by + ': ' + c.endReason.cause : ''),
    ]);
    tr.dataset.callId = c.id;
    tr.firstChild.prepend(link, ' ');
    body.append(tr);
  }
  document.getElementById('page').textContent = `${offset + 1}–${offset + calls.length}`;
  document.getElementById('prev').disabled = offset === 0;
  document.getElementById('next').disabled = calls.length < PAGE;
}

form.addEventListener('submit', (e) => {
  e.preventDefault();
  offset = 0;
  load();
});
document.getElementById('prev').onclick = () => {
  offset = Math.max(0, offset - PAGE);
  load();
};
document.getElementById('next').onclick = () => {
  offset += PAGE;
  load();
};
load();
