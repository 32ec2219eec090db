// The system page: the gateway's own figures over time (GET /v1/system/series, sampled in-process
// by SystemSampler), charted with uPlot served from node_modules. The session cookie authenticates.
import uPlot from '/vendor/uplot/uPlot.esm.js';

const $ = (id) => document.getElementById(id);
const COLOURS = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
/** Live charts by container id, with the series labels they were built for. */
const charts = new Map();

function draw(id, labels, columns) {
  const old = charts.get(id);
  if (old && old.labels.join('\n') === labels.join('\n')) return old.plot.setData(columns);
  old?.plot.destroy();
  const opts = {
    width: Math.min(900, document.body.clientWidth - 20),
    height: 200,
    series: [{}, ...labels.map((label, i) => ({ label, stroke: COLOURS[i % COLOURS.length], width: 1.5 }))],
    axes: [{}, { size: 60 }],
  };
  charts.set(id, { labels, plot: new uPlot(opts, columns, $(id)) });
}

async function refresh() {
  const res = await fetch('/v1/system/series').catch(() => null);
  if (!res || !res.ok) {
    $('status').textContent = res?.status === 401 ? 'sign in on the live calls page first' : 'gateway unreachable';
    return;
  }
  const s = await res.json();
  const keys = Object.keys(s.calls).sort();
  $('status').textContent = s.t.length + ' samples, every ' + s.intervalMs / 1000 + ' s';
  draw('calls', keys.length ? keys : ['no calls yet'], [
    s.t,
    ...(keys.length ? keys.map((k) => s.calls[k]) : [s.t.map(() => 0)]),
  ]);
  draw('late', ['late / delivered frames'], [s.t, s.lateRatio]);
  draw('cpu', ['CPU %'], [s.t, s.cpu]);
  draw('memory', ['RSS', 'heap used'], [s.t, s.rssMb, s.heapMb]);
  // Tests (and curious operators) can read what is plotted.
  window.systemCharts = Object.fromEntries(
    [...charts].map(([id, c]) => [id, { labels: c.labels, points: c.plot.data[0].length }]),
  );
  setTimeout(refresh, Math.max(1000, s.intervalMs));
}
refresh();
