import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { GatewayError } from '../../src/core/errors.js';
import { Router } from '../../src/core/router.js';

const shipped = parse(readFileSync('config/default.yaml', 'utf8'));

describe('config', () => {
  it('the shipped config is valid with no environment at all and routes to the local agent', () => {
    const cfg = parseConfig(shipped, {});
    expect(cfg.routing.default).toBe('local');
    expect(cfg.routes.local?.kind).toBe('local');
    expect(cfg.trunks.map((t) => t.name)).toEqual(['mtn-rwanda', 'go-malta']);
    expect(cfg.api.token).toBeUndefined();
  });

  it('takes secrets from ${VAR} and any key from GW__ overrides', () => {
    const cfg = parseConfig(shipped, { API_TOKEN: 'a-long-enough-token-123', GW__HTTP__PORT: '9099' });
    expect(cfg.api.token).toBe('a-long-enough-token-123');
    expect(cfg.http.port).toBe(9099);
  });

  it('names the key, the bad value and what is expected', () => {
    const errorOf = (doc: unknown) => {
      try {
        parseConfig(doc, {});
      } catch (e) {
        return e as GatewayError;
      }
      throw new Error('config was accepted');
    };
    const typeErr = errorOf({ ...shipped, http: { port: 'eighty' } });
    expect(typeErr.code).toBe('config_invalid');
    expect(typeErr.message).toMatch(/http\.port: got "eighty", expected .*number/);
    const refErr = errorOf({ ...shipped, routing: { default: 'nowhere' } });
    expect(refErr.message).toMatch(/routing\.default: got "nowhere", expected unknown route "nowhere"/);
  });

  it('never echoes a secret value in an error', () => {
    expect(() => parseConfig({ ...shipped, api: { token: 'short-secret' } }, {})).toThrowError(
      /api\.token: got \[redacted\], expected a token of at least 16 characters/,
    );
  });

  it('reports unset environment variables a route needs', () => {
    const doc = {
      ...shipped,
      routes: { ...shipped.routes, openai: { kind: 'realtime', apiKey: '${OPENAI_API_KEY}' } },
    };
    expect(() => parseConfig(doc, {})).toThrowError(
      /routes\.openai\.apiKey.*unset environment variables: OPENAI_API_KEY/s,
    );
  });

  it('an invalid config stops the process with exit code 2 and the message on stderr', async () => {
    const run = promisify(execFile);
    const err = await run('npx', ['tsx', 'src/main.ts'], {
      env: { ...process.env, GW__SIP__RTP_PORT_MIN: '30000', GW__SIP__RTP_PORT_MAX: '20000' },
    }).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(2);
    expect((err as { stderr: string }).stderr).toMatch(/sip\.rtpPortMax: got 20000, expected must be above rtpPortMin/);
  });

  it('routes by first matching rule, then trunk route, then default', () => {
    const cfg = parseConfig(
      {
        ...shipped,
        routes: { local: { kind: 'local' }, other: { kind: 'local' }, third: { kind: 'local' } },
        trunks: [{ name: 'go-malta', allow: ['127.0.0.2'], countryCode: '356', route: 'third' }],
        routing: { default: 'local', rules: [{ front: 'whatsapp', to: '1555*', route: 'other' }] },
      },
      {},
    );
    const r = new Router(cfg);
    expect(r.resolve({ front: 'whatsapp', from: 'x', to: '15550783881' }).name).toBe('other');
    expect(r.resolve({ front: 'sip', trunk: 'go-malta', from: 'x', to: '15550783881' }).name).toBe('third');
    expect(r.resolve({ front: 'sip', from: 'x', to: '+250' }).name).toBe('local');
  });
});
