import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { benchAiTurns } from './ai-turns.js';
import { benchCluster } from './cluster.js';
import { benchCodecPaths } from './codec-paths.js';
import { benchPlayout } from './playout.js';
import { benchRealtime } from './realtime.js';
import { benchSip } from './sip.js';
import type { BenchSection } from './stats.js';
import { benchWhatsapp } from './whatsapp.js';

/**
 * `npm run bench`: every performance target lives here (never in timed unit tests). Prints each
 * section and rewrites docs/performance.md with the figures and the command that produced them.
 * Pick sections with BENCH=codec,... (default: all).
 */
const suites: Record<string, () => Promise<BenchSection> | BenchSection> = {
  codec: benchCodecPaths,
  whatsapp: benchWhatsapp,
  realtime: benchRealtime,
  sip: benchSip,
  turns: benchAiTurns,
  playout: benchPlayout,
  cluster: benchCluster,
};

const DOC = 'docs/performance.md';

async function main(): Promise<void> {
  const only = process.env.BENCH?.split(',');
  const sections: BenchSection[] = [];
  for (const [name, run] of Object.entries(suites)) {
    if (only && !only.includes(name)) continue;
    const s = await run();
    process.stdout.write(`\n## ${s.title}\n\n${s.body}\n`);
    sections.push(s);
  }
  const cpu = cpus()[0]?.model ?? 'unknown CPU';
  const stamp = `${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${cpu}, ${cpus().length} cores`;
  const render = (s: BenchSection, command: string) => `\n## ${s.title}\n\n_\`${command}\` on ${stamp}._\n\n${s.body}`;
  // A partial run (BENCH=...) replaces only its own sections and keeps the others as they were.
  const kept = new Map<string, string>();
  if (only && existsSync(DOC)) {
    for (const part of readFileSync(DOC, 'utf8')
      .split(/\n(?=## )/)
      .slice(1)) {
      kept.set(part.slice(3, part.indexOf('\n')).trim(), `\n${part.trimEnd()}`);
    }
  }
  for (const s of sections)
    kept.set(s.title, render(s, only ? `BENCH=${only.join(',')} npm run bench` : 'npm run bench'));
  const doc = [
    '# Performance',
    '',
    'Every figure comes from `npm run bench` (all sections) or `BENCH=<suite> npm run bench` (one section;',
    'suites: ' + Object.keys(suites).join(', ') + '). Each section names the command and machine that produced it.',
    'These machines are shared and noisy: compare ratios and percentiles, not single runs.',
    ...kept.values(),
    '',
  ].join('\n');
  writeFileSync(DOC, doc);
}

void main();
