import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startSipHarness, type SipHarness } from '../peers/sip/harness.js';

/** Every PromQL expression in the dashboard (panel targets and template variable queries). */
function expressions(node: unknown, out: string[] = []): string[] {
  if (Array.isArray(node)) for (const n of node) expressions(n, out);
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if ((k === 'expr' || k === 'definition') && typeof v === 'string') out.push(v);
      else expressions(v, out);
    }
  }
  return out;
}

/**
 * The metric names a PromQL expression reads: strip label matchers, ranges, grouping clauses,
 * strings, numbers and function calls; what is left are series names.
 */
export function metricNames(expr: string): string[] {
  const stripped = expr
    .replace(/label_values\(\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*,[^)]*\)/g, '$1')
    .replace(/"[^"]*"/g, '')
    .replace(/\{[^}]*\}/g, '')
    .replace(/\[[^\]]*\]/g, '')
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '')
    .replace(/\b[a-z_]+\s*\(/g, '(');
  const keywords = new Set(['and', 'or', 'unless', 'bool', 'offset']);
  return (stripped.match(/[a-zA-Z_:][a-zA-Z0-9_:]*/g) ?? []).filter((n) => !keywords.has(n));
}

let h: SipHarness;
beforeAll(async () => {
  h = await startSipHarness({});
});
afterAll(async () => h?.stop());

describe('Grafana dashboard (config/grafana/voice-gateway.json)', () => {
  const dashboard = JSON.parse(readFileSync('config/grafana/voice-gateway.json', 'utf8')) as unknown;
  const exprs = expressions(dashboard);

  it('the name extraction sees through PromQL syntax', () => {
    expect(
      metricNames(
        'histogram_quantile(0.95, sum by (le, share) (rate(x_seconds_bucket{a=~"$i"}[$__rate_interval]))) / clamp_min(y_total, 1) * 60',
      ),
    ).toEqual(['x_seconds_bucket', 'y_total']);
    expect(metricNames('label_values(gateway_active_calls, instance)')).toEqual(['gateway_active_calls']);
  });

  it('every query names a metric the gateway exports (histogram series by their _bucket/_sum/_count)', async () => {
    const exported = new Set<string>();
    for (const m of await h.gw.ctx.metrics.registry.getMetricsAsJSON()) {
      exported.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(m.name + s);
    }
    // Standard process metrics, under their standard names (no doubled prefix).
    expect(exported).toContain('process_cpu_seconds_total');
    expect(exported).toContain('nodejs_heap_size_used_bytes');
    expect([...exported].filter((n) => n.startsWith('gateway_process_'))).toEqual([]);
    // Base units: no histogram or counter in ms.
    expect([...exported].filter((n) => /_ms(_|$)/.test(n))).toEqual([]);
    expect(exprs.length).toBeGreaterThan(15);
    const names = exprs.flatMap(metricNames);
    expect(names.length).toBeGreaterThanOrEqual(exprs.length);
    expect(names.filter((n) => !exported.has(n))).toEqual([]);
  });

  it('a scrape shows the renamed series with values in seconds', async () => {
    const text = await h.gw.ctx.metrics.registry.metrics();
    expect(text).toMatch(/^process_cpu_seconds_total \d/m);
    // 20 ms barge-in bucket, written as 0.02 s.
    expect(text).toContain('gateway_barge_in_seconds_bucket{le="0.02"} 0');
    expect(text).toContain('# TYPE gateway_call_jitter_seconds histogram');
    expect(text).toContain('gateway_media_frames_late_total');
  });
});
