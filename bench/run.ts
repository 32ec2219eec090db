import { writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { benchCodecPaths } from './codec-paths.js';
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
};

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
  const doc = [
    '# Performance',
    '',
    `Produced by \`npm run bench\` on ${new Date().toISOString().slice(0, 10)}, Node ${process.version}, ${cpu}, ${cpus().length} cores.`,
    'These machines are shared and noisy: compare ratios and percentiles, not single runs.',
    ...sections.map((s) => `\n## ${s.title}\n\n${s.body}`),
    '',
  ].join('\n');
  if (!only) writeFileSync('docs/performance.md', doc);
}

void main();
