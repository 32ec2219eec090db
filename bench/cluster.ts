import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AiBackend } from '../src/ai/session.js';
import { parseConfig } from '../src/config/load.js';
import { l16 } from '../src/core/audio/format.js';
import { testLogger } from '../src/core/logger.js';
import { buildFronts } from '../src/fronts.js';
import { Gateway } from '../src/gateway.js';
import { SipFront } from '../src/sip/front.js';
import { tagOf } from '../src/sip/message.js';
import { startDispatcher } from '../test/peers/kamailio/dispatcher.js';
import { startRedis, type RedisServer } from '../test/peers/redis/server.js';
import { toneRtp, writePcap } from '../test/peers/sip/pcap.js';
import { newId, RawSipPeer, request, sdpOffer } from '../test/peers/sip/udp-peer.js';
import { ToneAi } from '../test/peers/tone-ai.js';
import { loopbackSipConfig } from '../test/support/gateway.js';
import { leasePortRange } from '../test/support/ports.js';
import { type BenchSection, summarize, table } from './stats.js';

/** Sequential set-ups per state backend for the latency comparison. */
const LATENCY_CALLS = Number(process.env.BENCH_CLUSTER_LATENCY_CALLS ?? 300);
/** Calls through Kamailio for the rate figure, offered at RATE per second. */
const RATE_CALLS = Number(process.env.BENCH_CLUSTER_CALLS ?? 600);
const RATE = Number(process.env.BENCH_CLUSTER_RATE ?? 50);

async function freeTcpPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** A gateway as `npm start` builds it, SIP on a free port, a tone AI (no model cost in the figures). */
async function gateway(id: string, redis: RedisServer | undefined): Promise<{ gw: Gateway; port: number }> {
  const httpPort = await freeTcpPort();
  // Leased like the tests' ranges (a fixed base collides with a test run beside the bench; the
  // lease dies with this process).
  const [rtpMin, rtpMax] = leasePortRange(1000);
  const config = parseConfig(
    {
      ...loopbackSipConfig(rtpMin, rtpMax, {
        rtpTimeoutSec: 30,
        limits: { invitePerSec: 10_000 },
        // Kamailio names the trunk (X-Gateway-Trunk), as in compose.yaml.
        trustedProxies: ['127.0.0.1/32'],
      }),
      http: { host: '127.0.0.1', port: httpPort },
      trunks: [{ name: 'bench', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0', maxCalls: 10_000 }],
      routes: { local: { kind: 'local', greeting: '' } },
      cluster: redis
        ? {
            instanceId: id,
            advertiseUrl: `http://127.0.0.1:${httpPort}`,
            secret: 'bench-cluster-secret-0123456789',
            redis: { url: redis.url },
          }
        : { instanceId: id },
    },
    {},
  );
  const gw = new Gateway(config, testLogger());
  const backend: AiBackend = { kind: 'local', open: (o) => new ToneAi(440, { format: l16(8000), control: o.control }) };
  gw.ctx.backends.register('local', () => backend);
  const fronts = buildFronts(gw.ctx);
  for (const f of fronts) gw.addFront(f);
  await gw.start();
  const sip = fronts.find((f): f is SipFront => f instanceof SipFront)!;
  return { gw, port: (sip.engine as unknown as { port: number }).port };
}

/** INVITE → 200 OK time of one call (then ACKed and BYEd, so the next starts from the same state). */
async function oneSetup(peer: RawSipPeer, port: number, i: number): Promise<number> {
  const callId = newId();
  const t0 = performance.now();
  peer.send(request({ callId, localPort: peer.port, targetPort: port, sdp: sdpOffer(50_000 + (i % 500) * 2) }), port);
  const ok = await peer.waitFor(
    (m) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId,
    5000,
    '200',
  );
  const ms = performance.now() - t0;
  const toTag = tagOf(ok.headers.get('to'))!;
  peer.send(request({ callId, method: 'ACK', toTag, localPort: peer.port, targetPort: port }), port);
  peer.send(request({ callId, method: 'BYE', cseq: 2, toTag, localPort: peer.port, targetPort: port }), port);
  await peer.waitFor(
    (m) => m.kind === 'response' && m.headers.get('call-id') === callId && /BYE/.test(m.headers.get('cseq') ?? ''),
    5000,
    'BYE 200',
  );
  return ms;
}

/**
 * Set-up latency on two gateways, calls alternating between them (so machine noise and JIT warm-up
 * hit both alike); the first tenth (at most 20 each) is warm-up and not counted.
 */
async function setupLatencies(ports: [number, number], n: number): Promise<[number[], number[]]> {
  const peer = new RawSipPeer();
  await peer.start();
  const out: [number[], number[]] = [[], []];
  try {
    for (let i = 0; i < n; i++) for (const k of [0, 1] as const) out[k].push(await oneSetup(peer, ports[k], i));
  } finally {
    peer.close();
  }
  const warm = Math.min(20, Math.floor(n / 10));
  return [out[0].slice(warm), out[1].slice(warm)];
}

/** sipp through Kamailio: `calls` at `rate`/s, each holding 1 s; resolves with the wall time and sipp's exit code. */
async function sippRun(
  kamPort: number,
  calls: number,
  rate: number,
): Promise<{ ms: number; code: number; out: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'bench-sipp-'));
  try {
    const pcap = join(dir, 'tone.pcap');
    writePcap(pcap, toneRtp('PCMA', 1000, 500));
    const xml = readFileSync(join(import.meta.dirname, '../test/sipp/uac-cluster.xml'), 'utf8')
      .replaceAll('@@FROM@@', '0788123456')
      .replaceAll('@@TO@@', '0700000001')
      .replaceAll('@@KPORT@@', String(kamPort))
      .replaceAll('@@PAUSE@@', '1000')
      .replaceAll('@@PCAP@@', pcap);
    writeFileSync(join(dir, 's.xml'), xml);
    const [mediaPort] = leasePortRange(100);
    const t0 = performance.now();
    let out = '';
    const child = spawn(
      'sipp',
      ['-sf', join(dir, 's.xml'), '-m', String(calls), '-r', String(rate), '-l', String(rate * 3)]
        .concat([
          '-i',
          '127.0.0.1',
          '-p',
          '0',
          '-mi',
          '127.0.0.1',
          '-mp',
          String(mediaPort),
          '-nostdin',
          '-timeout',
          '300s',
        ])
        .concat([`127.0.0.1:${kamPort}`]),
      { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    child.stdout.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    child.stderr.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-4000)));
    const code = await new Promise<number>((r) => child.on('exit', (c) => r(c ?? -1)));
    return { ms: performance.now() - t0, code, out };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

const f1 = (n: number) => n.toFixed(1);
const f2 = (n: number) => n.toFixed(2);

export async function benchCluster(): Promise<BenchSection> {
  const redis = await startRedis();
  try {
    // 1. Added set-up latency of Redis-backed state: the same gateway, the same calls, one run.
    const local = await gateway('bench-local', undefined);
    const shared = await gateway('bench-redis', redis);
    const [inProcessMs, viaRedisMs] = await setupLatencies([local.port, shared.port], LATENCY_CALLS);
    const inProcess = summarize(inProcessMs);
    const viaRedis = summarize(viaRedisMs);
    await Promise.all([local.gw.stop('bench_done', 0), shared.gw.stop('bench_done', 0)]);

    // 2. Set-up rate through Kamailio to two Redis-backed gateways.
    const a = await gateway('bench-a', redis);
    const b = await gateway('bench-b', redis);
    const kam = await startDispatcher([`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`], 1, [
      { address: '127.0.0.1', trunk: 'bench' },
    ]);
    const created = { a: 0, b: 0 };
    a.gw.ctx.registry.on('created', () => created.a++);
    b.gw.ctx.registry.on('created', () => created.b++);
    const run = await sippRun(kam.port, RATE_CALLS, RATE);
    await kam.stop();
    await Promise.all([a.gw.stop('bench_done', 0), b.gw.stop('bench_done', 0)]);
    const answered = created.a + created.b;
    const achieved = answered / ((run.ms - 1000) / 1000); // the last call's 1 s hold is not set-up time

    const body = [
      `Set-up latency (INVITE → 200 OK, ${LATENCY_CALLS} sequential calls per gateway, alternating, raw UDP carrier, tone AI), ms:`,
      '',
      table(
        ['cluster state', 'p50', 'p99', 'mean'],
        [
          ['in-process', f2(inProcess.p50), f2(inProcess.p99), f2(inProcess.mean)],
          ['Redis (loopback)', f2(viaRedis.p50), f2(viaRedis.p99), f2(viaRedis.mean)],
          ['ratio Redis / in-process', f2(viaRedis.p50 / inProcess.p50), f2(viaRedis.p99 / inProcess.p99), ''],
        ],
      ),
      '',
      `Set-up rate through Kamailio (config/kamailio/kamailio.cfg, 1 worker) to 2 Redis-backed gateways: ${RATE_CALLS} sipp calls offered at ${RATE}/s, each held 1 s:`,
      '',
      table(
        ['offered/s', 'answered', 'gw-a', 'gw-b', 'achieved calls/s', 'sipp exit'],
        [[RATE, answered, created.a, created.b, f1(achieved), run.code]],
      ),
    ].join('\n');
    return { title: 'Cluster: call set-up through Kamailio to 2 gateways, Redis vs in-process state', body };
  } finally {
    await redis.stop();
  }
}
