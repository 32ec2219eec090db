import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import type { ZodError } from 'zod';
import { GatewayError } from '../core/errors.js';
import { configSchema, type GatewayConfig } from './schema.js';

/**
 * Config = one YAML file + environment. Secrets stay out of the file: it refers to them as
 * `${VAR}` (or `${VAR:-fallback}`), resolved from the environment at load. Any key can also be
 * overridden with `GW__<PATH>` (double underscores between levels, e.g. `GW__HTTP__PORT=9090`,
 * `GW__ROUTING__DEFAULT=openai`); values are parsed as JSON when they parse, else taken as strings.
 */

const PLACEHOLDER = /\$\{([A-Z0-9_]+)(?::-([^}]*))?\}/g;

function substitute(value: unknown, env: NodeJS.ProcessEnv, missing: Set<string>): unknown {
  if (typeof value === 'string') {
    return value.replace(PLACEHOLDER, (_, name: string, fallback?: string) => {
      const v = env[name];
      if (v !== undefined && v !== '') return v;
      if (fallback !== undefined) return fallback;
      missing.add(name);
      return '';
    });
  }
  if (Array.isArray(value)) return value.map((v) => substitute(v, env, missing));
  if (value && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, substitute(v, env, missing)]));
  }
  return value;
}

function camel(segment: string): string {
  return segment.toLowerCase().replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

function applyOverrides(doc: Record<string, unknown>, env: NodeJS.ProcessEnv): void {
  for (const [key, raw] of Object.entries(env)) {
    if (!key.startsWith('GW__') || raw === undefined) continue;
    const path = key.slice(4).split('__').map(camel);
    let value: unknown = raw;
    try {
      value = JSON.parse(raw);
    } catch {
      // plain string
    }
    let node = doc;
    for (const seg of path.slice(0, -1)) {
      if (!node[seg] || typeof node[seg] !== 'object') node[seg] = {};
      node = node[seg] as Record<string, unknown>;
    }
    node[path[path.length - 1]!] = value;
  }
}

function show(value: unknown): string {
  if (value === undefined) return 'nothing';
  const s = JSON.stringify(value);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
}

/** One line per problem: the key, the bad value and what was expected. Secret values are never echoed. */
export function formatConfigError(err: ZodError, doc: unknown): string {
  return err.issues
    .map((i) => {
      const key = i.path.join('.') || '(root)';
      let at: unknown = doc;
      for (const seg of i.path)
        at = at && typeof at === 'object' ? (at as Record<string | number, unknown>)[seg as string] : undefined;
      const secret = /token|secret|password|key/i.test(key);
      return `  ${key}: got ${secret && at ? '[redacted]' : show(at)}, expected ${i.message}`;
    })
    .join('\n');
}

export function parseConfig(doc: unknown, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  const missing = new Set<string>();
  const resolved = (substitute(doc ?? {}, env, missing) ?? {}) as Record<string, unknown>;
  applyOverrides(resolved, env);
  const result = configSchema.safeParse(resolved);
  if (!result.success) {
    const hint = missing.size ? `\n  (unset environment variables: ${[...missing].join(', ')})` : '';
    throw new GatewayError(
      'config_invalid',
      `invalid configuration:\n${formatConfigError(result.error, resolved)}${hint}`,
    );
  }
  return result.data;
}

export function loadConfig(path: string, env: NodeJS.ProcessEnv = process.env): GatewayConfig {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new GatewayError('config_invalid', `cannot read config file ${path}: ${(err as Error).message}`);
  }
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new GatewayError('config_invalid', `config file ${path} is not valid YAML: ${(err as Error).message}`);
  }
  return parseConfig(doc, env);
}
