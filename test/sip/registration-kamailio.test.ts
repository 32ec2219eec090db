import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency } from '../support/audio.js';
import { api, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { Kamailio } from '../peers/kamailio/registrar.js';
import { freeSipPort } from '../support/free-ports.js';
import { runSipp, startSipHarness, type SipHarness } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';
import { udpBound } from '../support/udp.js';

/**
 * Registration trunks against a real registrar: Debian's kamailio (registrar + usrloc + auth_db
 * over db_text) as the carrier. The gateway's trunks have no `allow` at all: calls reach them only
 * through the registration, and only from the registrar's address (requireRegistrarSource, checked
 * by the engine's source admission before any state).
 */
const REALM = 'carrier.test';
let k: Kamailio;
let h: SipHarness;
let dir: string;
let phonePort: number;

const reg = (trunk: string) => h.front.registrations!.status(trunk)!;

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), 'reg-kam-'));
  writePcap(join(dir, 'pcma-1000.pcap'), toneRtp('PCMA', 1000, 2000));
  phonePort = await freeSipPort();
  k = new Kamailio({
    realm: REALM,
    subscribers: { gw1: 'right-pw', gw2: 'other-pw', gw3: 'tcp-pw' },
    dialUser: 'gw1',
    phonePort,
    minExpires: 3,
    maxExpires: 4,
  });
  await k.start();
  const registrar = `sip:127.0.0.1:${k.port}`;
  h = await startSipHarness({
    sip: { publicAddress: undefined },
    config: { api: { token: TEST_TOKEN } },
    trunks: [
      {
        name: 'carrier',
        match: 'registration',
        countryCode: '250',
        nationalPrefix: '0',
        callerIdHeader: 'pai',
        // Asks for 2 s: kamailio answers 423 with Min-Expires 3 and grants 3 s, refreshed every 1.5 s.
        register: {
          registrar,
          domain: REALM,
          username: 'gw1',
          password: 'right-pw',
          expiresSec: 2,
          retryMinSec: 0.5,
          requireRegistrarSource: true, // kamailio delivers from the address it registered us at
        },
      },
      {
        name: 'over-tcp',
        match: 'registration',
        countryCode: '250',
        register: {
          registrar,
          domain: REALM,
          username: 'gw3',
          password: 'tcp-pw',
          transport: 'tcp',
          expiresSec: 60,
          retryMinSec: 0.5,
          retryMaxSec: 1,
          keepAliveSec: 1,
          requireRegistrarSource: true,
        },
      },
      {
        name: 'wrong',
        match: 'registration',
        countryCode: '250',
        register: {
          registrar,
          domain: REALM,
          username: 'gw2',
          password: 'not-it',
          retryMinSec: 1,
          retryMaxSec: 4,
          requireRegistrarSource: true,
        },
      },
    ],
  });
}, 60_000);

afterAll(async () => {
  await h?.stop();
  await k?.dispose();
  rmSync(dir, { recursive: true, force: true });
});

describe('registration trunk with a real registrar (kamailio)', () => {
  it('registers with digest after a 423, binds our Contact, and shows it in /v1/trunks, /readyz and metrics', async () => {
    await waitFor(() => reg('carrier').state === 'registered', 15_000, 'carrier registered').catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(reg('carrier'))} ${k.stderr.slice(-3000)}`);
    });
    const s = reg('carrier');
    expect(s.grantedExpiresSec).toBe(3); // Min-Expires from the 423, capped by max_expires 4
    expect(s.contact).toBe(`sip:gw1@127.0.0.1:${h.port}`);
    expect(k.bindings('gw1')).toContain(`sip:gw1@127.0.0.1:${h.port}`);
    const call = api(h.gw);
    const trunks = await call('GET', '/v1/trunks');
    expect(trunks.status).toBe(200);
    const t = (trunks.body.trunks as { name: string; kind: string; registration: { state: string } }[]).find(
      (x) => x.name === 'carrier',
    )!;
    expect(t).toMatchObject({ kind: 'registration', registration: { state: 'registered' } });
    const ready = await fetch(`http://127.0.0.1:${h.gw.httpPort}/readyz`);
    const body = (await ready.json()) as { registrations: { trunk: string; state: string }[] };
    expect(body.registrations).toContainEqual(expect.objectContaining({ trunk: 'carrier', state: 'registered' }));
    const metrics = await (
      await fetch(`http://127.0.0.1:${h.gw.httpPort}/metrics`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } })
    ).text();
    expect(metrics).toMatch(/gateway_trunk_registration_up\{trunk="carrier"\} 1/);
  });

  it('refreshes the short binding several times before it expires, staying registered', async () => {
    const before = reg('carrier').confirmed;
    await waitFor(() => reg('carrier').confirmed >= before + 3, 15_000, 'three refreshes');
    expect(reg('carrier').state).toBe('registered');
    expect(k.bindings('gw1')).toHaveLength(1);
  });

  it('a wrong password fails with 401 and backs off: no tight retry loop', async () => {
    await waitFor(() => reg('wrong').state === 'failing', 10_000, 'wrong trunk failing');
    const start = reg('wrong');
    const t0 = Date.now();
    await new Promise((r) => setTimeout(r, 5000));
    const now = reg('wrong');
    expect(now).toMatchObject({ state: 'failing', lastStatus: 401 });
    expect(now.lastReason).toMatch(/credentials refused/);
    expect(now.nextAttemptAt).toBeDefined();
    // Backoff 1, 2, 4 s (with 50–100 % jitter): at most ~5 attempts of 2 REGISTERs each in 5 s.
    const sent = now.sent - start.sent;
    expect(sent).toBeLessThanOrEqual(2 * Math.ceil((Date.now() - t0) / 1000 / 0.5));
    expect(sent).toBeLessThanOrEqual(12);
    expect(now.failures).toBeGreaterThanOrEqual(2);
    expect(k.bindings('gw2')).toHaveLength(0);
    const metrics = await (
      await fetch(`http://127.0.0.1:${h.gw.httpPort}/metrics`, { headers: { authorization: `Bearer ${TEST_TOKEN}` } })
    ).text();
    expect(metrics).toMatch(/gateway_trunk_registration_failures_total\{trunk="wrong",code="401"\} [2-9]/);
  });

  it('a call sent to the registrar for our AoR reaches the gateway via the binding, audio both ways', async () => {
    const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
    const res = await runSipp({
      scenario: 'uac-audio.xml',
      target: `127.0.0.1:${k.port}`,
      vars: {
        PCAP: join(dir, 'pcma-1000.pcap'),
        PT: '8',
        CODEC: 'PCMA',
        PAUSE: '2500',
        FROM: '0788123456',
        TO: 'gw1',
      },
    });
    expect(res.code, res.errors + res.stderr + k.stderr.slice(-1500)).toBe(0);
    const call = await created;
    await waitFor(() => call.ended, 5000, 'call ended');
    expect(call.info).toMatchObject({ trunk: 'carrier', from: '+250788123456' });
    const heard = h.sessions.get(call.id)!.heardPcm(10);
    expect(heard.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(heard, 8000) - 1000) / 1000).toBeLessThan(0.02);
    const q = Object.values(call.quality)[0] as { packetsReceived: number; packetsSent: number };
    expect(q.packetsSent).toBeGreaterThan(80); // the AI's audio went back to the caller
  });

  it('an INVITE that kamailio challenges (407) goes through with the trunk credentials and our identity', async () => {
    const phoneDir = mkdtempSync(join(tmpdir(), 'sipp-uas-'));
    let xml = readFileSync(join(import.meta.dirname, '../sipp/uas-answer.xml'), 'utf8');
    xml = xml.replaceAll('@@PAI@@', '\\+250788000111').replaceAll('@@FROM_USER@@', 'gw1');
    xml = xml.replaceAll('@@FROM_DOMAIN@@', REALM);
    writeFileSync(join(phoneDir, 'uas.xml'), xml);
    const phone = spawn(
      'sipp',
      [
        '-sf',
        'uas.xml',
        '-i',
        '127.0.0.1',
        '-p',
        String(phonePort),
        '-m',
        '1',
        '-nostdin',
        '-timeout',
        '30s',
        '-trace_err',
        '-error_file',
        'errors.log',
        '-trace_msg',
        '-message_file',
        'messages.log',
      ],
      { cwd: phoneDir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let phoneOut = '';
    phone.stdout!.on('data', (d: Buffer) => (phoneOut = (phoneOut + d.toString()).slice(-3000)));
    phone.stderr!.on('data', (d: Buffer) => (phoneOut = (phoneOut + d.toString()).slice(-3000)));
    const exited = new Promise<number>((r) => phone.on('exit', (c) => r(c ?? -1)));
    try {
      await udpBound(phonePort); // sipp listens (a loaded box may take longer than any fixed sleep)
      const call = api(h.gw);
      const placed = await call('POST', '/v1/calls', {
        front: 'sip',
        to: '0788555000',
        from: '+250788000111',
        trunk: 'carrier',
      });
      expect(placed.status, JSON.stringify(placed.body)).toBe(201);
      const c = h.gw.ctx.registry.get(placed.body.id as string)!;
      await waitFor(() => c.state === 'bridged' || c.ended, 15_000, 'outbound call answered').catch((e: Error) => {
        throw new Error(
          `${e.message}: ${c.state} phone exit=${phone.exitCode} ${phoneOut} ${k.stderr
            .split('\n')
            .filter((l) => !/REGISTER/.test(l))
            .slice(-30)
            .join('\n')}`,
        );
      });
      expect(c.ended, JSON.stringify(c.endReason)).toBe(false);
      await call('DELETE', `/v1/calls/${c.id}`, {});
      expect(await exited).toBe(0); // sipp checked PAI and From, and got our BYE
    } finally {
      if (phone.exitCode === null) phone.kill('SIGKILL');
      rmSync(phoneDir, { recursive: true, force: true });
    }
  });

  it('registers over TCP on a connection it keeps open (CRLF keep-alives) while the calls-only ones close', async () => {
    await waitFor(() => reg('over-tcp').state === 'registered', 10_000, 'tcp trunk registered');
    expect(k.bindings('gw3')).toEqual([`sip:gw3@127.0.0.1:${h.port};transport=tcp`]);
    await new Promise((r) => setTimeout(r, 2500)); // past the engine's idle-connection release
    expect(reg('over-tcp').state).toBe('registered');
    expect((h.front.engine as unknown as { streamConnections: { tcp: number } }).streamConnections.tcp).toBe(1);
  });

  it('re-registers after the registrar is killed and restarted (its location table was lost)', async () => {
    const tcpConfirmed = reg('over-tcp').confirmed;
    await k.stop('SIGKILL');
    await k.start(); // same port, empty location table
    expect(k.bindings('gw1')).toHaveLength(0);
    await waitFor(() => k.bindings('gw1').length === 1, 15_000, 'binding restored on the new registrar');
    expect(reg('carrier').state).toBe('registered');
    // TCP: the dropped connection triggers the re-REGISTER (its 60 s binding is nowhere near refresh).
    // The registrar stores the binding before its 200 reaches us: wait for both ends to agree.
    await waitFor(
      () => k.bindings('gw3').length === 1 && reg('over-tcp').confirmed > tcpConfirmed,
      15_000,
      'tcp binding restored and confirmed',
    ).catch((e: Error) => {
      throw new Error(`${e.message}: ${JSON.stringify(reg('over-tcp'))}`);
    });
    expect(reg('over-tcp').state).toBe('registered');
  });

  it('shutdown un-registers: the location table is empty afterwards', async () => {
    await waitFor(() => k.bindings('gw1').length === 1, 10_000, 'bound');
    await h.stop();
    expect(reg('carrier').state).toBe('stopped');
    expect(k.bindings('gw1')).toHaveLength(0);
    expect(k.bindings('gw3')).toHaveLength(0);
    expect(k.aors()).toHaveLength(0);
  });
});
