import { existsSync, mkdtempSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { Gateway } from '../../src/gateway.js';
import { simulatedCall, startTestGateway, TEST_TOKEN, waitFor } from '../support/gateway.js';

let gw: Gateway | undefined;
afterAll(async () => gw?.stop('test_done', 0));

describe('GET /v1/calls/:id/recording', () => {
  it('serves the WAV behind auth with Range requests (206); bad ids and unknown calls get precise errors', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gw-rec-'));
    gw = await startTestGateway({ records: { path: ':memory:', recordAudio: true, recordingsDir: dir } });
    const { call, leg } = await simulatedCall(gw);
    await waitFor(() => leg.written.length >= 25, 10_000, '0.5 s of the call');
    await call.end({ by: 'remote', cause: 'bye' });
    const file = join(dir, `${call.id}.wav`);
    await waitFor(() => existsSync(file) && statSync(file).size > 44, 5000, 'the WAV');
    const url = `http://127.0.0.1:${gw.httpPort}/v1/calls/${call.id}/recording`;
    const auth = { authorization: `Bearer ${TEST_TOKEN}` };
    const part = await fetch(url, { headers: { ...auth, range: 'bytes=0-43' } });
    expect(part.status).toBe(206);
    expect(part.headers.get('content-range')).toBe(`bytes 0-43/${statSync(file).size}`);
    const head = Buffer.from(await part.arrayBuffer());
    expect(head).toHaveLength(44);
    expect(head.subarray(0, 4).toString()).toBe('RIFF');
    const whole = await fetch(url, { headers: auth });
    expect(whole.status).toBe(200);
    expect((await whole.arrayBuffer()).byteLength).toBe(statSync(file).size);
    expect((await fetch(url)).status).toBe(401);
    const base = `http://127.0.0.1:${gw.httpPort}/v1/calls`;
    expect((await fetch(`${base}/..%2F..%2Fetc%2Fpasswd/recording`, { headers: auth })).status).toBe(400);
    const unknown = await fetch(`${base}/00000000-0000-0000-0000-000000000000/recording`, { headers: auth });
    expect(unknown.status).toBe(404);
    expect(((await unknown.json()) as { error: { code: string } }).error.code).toBe('not_found');
  });
});
