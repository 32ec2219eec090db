import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { dominantFrequency } from '../support/audio.js';
import { sleep, waitFor } from '../support/gateway.js';
import { startDrachtioHarness, type DrachtioHarness } from '../peers/drachtio/gateway.js';
import { drachtioUnavailable, startDrachtioServer, type DrachtioServer } from '../peers/drachtio/server.js';
import { runSipp, type SippResult } from '../peers/sip/harness.js';
import { toneRtp, writePcap } from '../peers/sip/pcap.js';

const skip = !!drachtioUnavailable();
const NUMS = { FROM: '0788123456', TO: '0700000001' };

let server: DrachtioServer | undefined;
let h: DrachtioHarness | undefined;
let sipps: Promise<SippResult>[] = [];
let dir: string;
let pcap: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'drachtio-link-'));
  pcap = join(dir, 'pcma-1000.pcap');
  writePcap(pcap, toneRtp('PCMA', 1000, 9000));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(async () => {
  await Promise.all(sipps);
  sipps = [];
  await h?.stop();
  await server?.stop();
  h = undefined;
  server = undefined;
});

const readyz = async (h: DrachtioHarness) => (await fetch(`http://127.0.0.1:${h.gw.httpPort}/readyz`)).status;

/** A sipp call that plays 9 s of 1 kHz; resolves with the gateway's call once the AI hears it. */
async function longCall(h: DrachtioHarness): Promise<Call> {
  const created = new Promise<Call>((r) => h.gw.ctx.registry.once('created', r));
  sipps.push(
    runSipp({
      scenario: 'uac-audio.xml',
      target: h.target,
      vars: { PCAP: pcap, PT: '8', CODEC: 'PCMA', PAUSE: '9000', ...NUMS },
      timeoutSec: 20,
    }),
  );
  const call = await created;
  await waitFor(
    () => call.state === 'bridged' && (h.sessions.get(call.id)?.heardPcm(0).length ?? 0) > 4000,
    10_000,
    'audio',
  );
  return call;
}

describe.skipIf(skip)('the link to drachtio-server (kill it mid-call, bring it back)', () => {
  it('killed: not ready (/readyz 503), the call keeps its media, then ends sip_link_lost after the grace; back: new calls work', async () => {
    server = await startDrachtioServer();
    h = await startDrachtioHarness(server, { linkGraceSec: 3 });
    expect(await readyz(h)).toBe(200);
    const call = await longCall(h);

    await server.kill('SIGKILL');
    await waitFor(() => !h!.front.ready(), 5000, 'link down');
    expect(await readyz(h)).toBe(503);
    const heardAtKill = h.sessions.get(call.id)!.heardPcm(0).length;
    // 1.2 s heard while the link is down, waited for (not a 1.5 s sleep that a loaded box outruns),
    // well inside the 3 s grace.
    const heardSince = () => h!.sessions.get(call.id)!.heardPcm(0).length - heardAtKill;
    await waitFor(() => heardSince() > 9600 || call.ended, 5000, '1.2 s heard while drachtio is away');
    expect(call.ended).toBe(false);
    // RTP is ours: the caller's audio still reaches the AI while drachtio-server is away.
    const during = h.sessions.get(call.id)!.heardPcm(0).subarray(heardAtKill);
    expect(during.length).toBeGreaterThan(8000);
    expect(Math.abs(dominantFrequency(during, 8000) - 1000) / 1000).toBeLessThan(0.02);

    await waitFor(() => call.ended, 6000, 'call ended after the grace period');
    expect(call.endReason).toMatchObject({ by: 'error', cause: 'sip_link_lost' });
    await waitFor(() => h!.front.ports.used === 0, 3000, 'ports freed');

    await server.relaunch();
    await waitFor(() => h!.front.ready(), 15_000, 'reconnected');
    expect(await readyz(h)).toBe(200);
    const created = new Promise<Call>((r) => h!.gw.ctx.registry.once('created', r));
    const res = await runSipp({
      scenario: 'uac-audio.xml',
      target: h.target,
      vars: { PCAP: pcap, PT: '8', CODEC: 'PCMA', PAUSE: '1000', ...NUMS },
    });
    expect(res.code, res.errors + res.stderr).toBe(0);
    const again = await created;
    await waitFor(() => again.ended, 3000, 'second call ended');
    expect(again.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
  }, 60_000);

  it('back within the grace period after a restart: the call whose dialog the server lost ends at once', async () => {
    server = await startDrachtioServer();
    h = await startDrachtioHarness(server, { linkGraceSec: 60 });
    const call = await longCall(h);
    await server.kill('SIGKILL');
    await waitFor(() => !h!.front.ready(), 5000, 'link down');
    await sleep(500);
    expect(call.ended).toBe(false);
    await server.relaunch();
    await waitFor(() => h!.front.ready(), 15_000, 'reconnected');
    await waitFor(() => call.ended, 5000, 'call ended on reconnect');
    expect(call.endReason).toMatchObject({ by: 'error', cause: 'sip_link_lost' });
    expect(call.endReason?.detail).toMatch(/restarted/);
    expect(await readyz(h)).toBe(200);
  }, 60_000);
});
