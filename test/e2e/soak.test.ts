import { leasePortRange } from '../support/ports.js';
import v8 from 'node:v8';
import vm from 'node:vm';
import { afterAll, describe, expect, it } from 'vitest';
import type { AiBackend, AiSessionOptions } from '../../src/ai/session.js';
import { parseConfig } from '../../src/config/load.js';
import { testLogger } from '../../src/core/logger.js';
import { buildFronts } from '../../src/fronts.js';
import { Gateway } from '../../src/gateway.js';
import { SipFront } from '../../src/sip/front.js';
import { tagOf, type SipMessage } from '../../src/sip/message.js';
import { WEBHOOK_PATH, WhatsAppFront } from '../../src/webrtc/front.js';
import { loopbackSipConfig, openUdpSockets, sleep, waitFor } from '../support/gateway.js';
import { ToneAi } from '../peers/tone-ai.js';
import { newId, RawSipPeer, request, sdpOffer } from '../peers/sip/udp-peer.js';
import { GraphStub } from '../peers/whatsapp/graph-stub.js';
import { WhatsAppUser } from '../peers/whatsapp/user.js';

/**
 * Soak: SOAK_CALLS calls (default 280; the figure is 1,000: `SOAK_CALLS=1000 npx vitest run
 * test/e2e/soak.test.ts`) through one gateway, SIP and WhatsApp mixed, each ending by a different
 * path; afterwards the process is back to its idle baseline.
 */
const CALLS = Number(process.env.SOAK_CALLS ?? 280);
const CONCURRENCY = 10;
const TOKEN = 'soak-token-0123456789abcdef';
/** Tolerances against the idle baseline (taken after one warm-up call per path). */
const HEAP_TOLERANCE_MB = 25;
const TIMER_TOLERANCE = 3;
const TCP_TOLERANCE = 2;

type Path =
  | 'sip-caller-bye'
  | 'sip-gateway-bye'
  | 'sip-cancel'
  | 'sip-ai-error'
  | 'sip-rtp-timeout'
  | 'sip-operator'
  | 'wa-terminate'
  | 'wa-operator';
const EXPECTED_CAUSE: Record<Path, string> = {
  'sip-caller-bye': 'bye',
  'sip-gateway-bye': 'end_call',
  'sip-cancel': 'cancel',
  'sip-ai-error': 'ai_closed',
  'sip-rtp-timeout': 'rtp_timeout',
  'sip-operator': 'api_hangup',
  'wa-terminate': 'terminate',
  'wa-operator': 'api_hangup',
};
const SIP_PATHS: Path[] = [
  'sip-caller-bye',
  'sip-gateway-bye',
  'sip-cancel',
  'sip-ai-error',
  'sip-rtp-timeout',
  'sip-operator',
];
/** Call k's path: six SIP paths, then one WhatsApp call (terminate webhook and operator alternating). */
const pathOf = (k: number): Path =>
  k % 7 < 6 ? SIP_PATHS[k % 7]! : Math.floor(k / 7) % 2 ? 'wa-operator' : 'wa-terminate';

let cleanup: (() => Promise<void>) | undefined;
afterAll(async () => {
  await cleanup?.();
});

function gcNow(): void {
  v8.setFlagsFromString('--expose-gc');
  (vm.runInNewContext('gc') as () => void)();
}

function resources(): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of process.getActiveResourcesInfo()) out[r] = (out[r] ?? 0) + 1;
  return out;
}

async function snapshot(gw: Gateway) {
  gcNow();
  await sleep(50);
  gcNow();
  return {
    resources: resources(),
    udp: openUdpSockets(),
    registry: gw.ctx.registry.size,
    heapMB: process.memoryUsage().heapUsed / 2 ** 20,
  };
}

describe('soak: many calls through one gateway, every end path, nothing left behind', () => {
  it(`${CALLS} SIP and WhatsApp calls; resources, sockets, timers, registry and heap return to baseline`, async () => {
    const graph = new GraphStub();
    await graph.start();
    const [rtpMin] = leasePortRange(100);
    const [webrtcMin, webrtcMax] = leasePortRange(1000);
    const config = parseConfig(
      {
        ...loopbackSipConfig(rtpMin, rtpMin + 99, { rtpTimeoutSec: 1 }),
        http: { host: '127.0.0.1', port: 0, keepAliveTimeoutMs: 500 },
        api: { token: TOKEN },
        trunks: [{ name: 'soak', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0', maxCalls: 100 }],
        whatsapp: {
          enabled: true,
          phoneNumberId: graph.phoneNumberId,
          accessToken: graph.accessToken,
          appSecret: 'soak-app-secret-0123456789',
          verifyToken: 'soak-verify',
          graphBaseUrl: graph.baseUrl,
          graphVersion: graph.version,
          publicIp: '127.0.0.1',
          udpPortMin: webrtcMin,
          udpPortMax: webrtcMax,
          mediaTimeoutSec: 8,
        },
        routes: { local: { kind: 'local' } },
      },
      {},
    );
    const gw = new Gateway(config, testLogger());
    const sessions = new Map<string, ToneAi>();
    const backend: AiBackend = {
      kind: 'local',
      open(o: AiSessionOptions) {
        const ext = gw.ctx.registry.get(o.callId)?.info.externalId ?? '';
        // CANCEL calls: the AI takes a moment, so the INVITE is still ringing when CANCEL arrives.
        const s = new ToneAi(440, { control: o.control, startDelayMs: ext.startsWith('cancel-') ? 2000 : 0 });
        sessions.set(o.callId, s);
        s.once('closed', () => sessions.delete(o.callId));
        return s;
      },
    };
    gw.ctx.backends.register('local', () => backend);
    const fronts = buildFronts(gw.ctx);
    for (const f of fronts) gw.addFront(f);
    const sip = fronts.find((f): f is SipFront => f instanceof SipFront)!;
    const wa = fronts.find((f): f is WhatsAppFront => f instanceof WhatsAppFront)!;
    // T1 = 50 ms so SIP transaction timers (64·T1) settle in 3.2 s instead of 32 s before measuring.
    (sip.engine as unknown as { t1: number }).t1 = 50;
    await gw.start();
    const sipPort = (sip.engine as unknown as { port: number }).port;
    const base = `http://127.0.0.1:${gw.httpPort}`;
    const webhookUrl = `${base}${WEBHOOK_PATH}`;
    const peer = new RawSipPeer();
    await peer.start();
    peer.keep = false;
    cleanup = async () => {
      peer.close();
      await gw.stop('test_done', 0);
      await graph.stop();
    };

    // Carrier side: every message by Call-ID; the gateway's BYEs are answered at once.
    const inbox = new Map<string, SipMessage[]>();
    peer.onMessage = (m) => {
      const cid = m.headers.get('call-id') ?? '';
      if (m.kind === 'request' && m.method === 'BYE') peer.reply(m, 200, 'OK', sipPort);
      const list = inbox.get(cid);
      if (list) list.push(m);
    };
    const until = async (cid: string, pred: (m: SipMessage) => boolean, what: string, ms = 15_000) => {
      let hit: SipMessage | undefined;
      await waitFor(() => !!(hit = inbox.get(cid)!.find(pred)), ms, `${what} (${cid})`);
      return hit!;
    };
    const isResp =
      (status: number, method = 'INVITE') =>
      (m: SipMessage) =>
        m.kind === 'response' && m.status === status && !!m.headers.get('cseq')?.endsWith(method);
    const del = (id: string) =>
      fetch(`${base}/v1/calls/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
    const causes = new Map<string, number>();
    const waSetupFailures: string[] = [];
    gw.ctx.registry.on('ended', (c) => {
      const key = `${c.info.front}:${c.endReason?.cause}`;
      causes.set(key, (causes.get(key) ?? 0) + 1);
    });

    async function sipCall(path: Path, k: number): Promise<void> {
      const cid = `${path === 'sip-cancel' ? 'cancel-' : ''}${newId()}`;
      inbox.set(cid, []);
      const branch = `z9hG4bK${newId()}`;
      const rtpPort = 5000 + (k % 1000) * 2;
      const created = new Promise<string>((resolve) => {
        const on = (c: { id: string; info: { externalId?: string } }) => {
          if (c.info.externalId !== cid) return;
          gw.ctx.registry.off('created', on);
          resolve(c.id);
        };
        gw.ctx.registry.on('created', on);
      });
      peer.send(
        request({ callId: cid, branch, localPort: peer.port, targetPort: sipPort, sdp: sdpOffer(rtpPort) }),
        sipPort,
      );
      const callId = await created;
      if (path === 'sip-cancel') {
        await until(cid, isResp(180), '180');
        peer.send(
          request({ callId: cid, branch, method: 'CANCEL', localPort: peer.port, targetPort: sipPort }),
          sipPort,
        );
        const r487 = await until(cid, isResp(487), '487');
        peer.send(
          request({
            callId: cid,
            branch,
            method: 'ACK',
            toTag: tagOf(r487.headers.get('to')),
            localPort: peer.port,
            targetPort: sipPort,
          }),
          sipPort,
        );
      } else {
        const ok = await until(cid, isResp(200), '200');
        const toTag = tagOf(ok.headers.get('to'));
        peer.send(request({ callId: cid, method: 'ACK', toTag, localPort: peer.port, targetPort: sipPort }), sipPort);
        await waitFor(() => gw.ctx.registry.get(callId)?.state === 'bridged', 10_000, 'bridged');
        const session = sessions.get(callId)!;
        switch (path) {
          case 'sip-caller-bye':
            peer.send(
              request({ callId: cid, method: 'BYE', cseq: 2, toTag, localPort: peer.port, targetPort: sipPort }),
              sipPort,
            );
            await until(cid, isResp(200, 'BYE'), '200 to BYE');
            break;
          case 'sip-gateway-bye':
            session.quiet();
            session.control.hangupAfterPlayout('end_call');
            break;
          case 'sip-ai-error':
            void session.close('ai_error');
            break;
          case 'sip-operator':
            expect((await del(callId)).status).toBe(200);
            break;
          default: // sip-rtp-timeout: the carrier just goes silent
        }
        if (path !== 'sip-caller-bye') await until(cid, (m) => m.kind === 'request' && m.method === 'BYE', 'BYE');
      }
      await waitFor(() => !gw.ctx.registry.get(callId), 10_000, 'call gone');
      inbox.delete(cid);
    }

    async function whatsappCall(path: Path, k: number): Promise<void> {
      const user = new WhatsAppUser({
        webhookUrl,
        appSecret: 'soak-app-secret-0123456789',
        graph,
        number: `2507881${String(k).padStart(5, '0')}`,
      });
      try {
        try {
          await user.call(20_000);
        } catch (err) {
          // The werift user peer in this process sometimes misses ICE on a loaded box. That is
          // the peer's failure, but a half-set-up call must still be released: the gateway ends it
          // (media timeout) and the run checks that nothing is left behind. Counted and bounded.
          waSetupFailures.push((err as Error).message);
          await waitFor(() => !gw.ctx.registry.findByExternalId(user.waCallId), 20_000, 'failed WA call released');
          return;
        }
        let call;
        await waitFor(
          () => (call = gw.ctx.registry.findByExternalId(user.waCallId))?.state === 'bridged',
          10_000,
          'WA bridged',
        );
        const id = call!.id;
        if (path === 'wa-terminate') await user.hangup();
        else {
          expect((await del(id)).status).toBe(200);
          await graph.waitFor('terminate', user.waCallId, 5000);
        }
        await waitFor(() => !gw.ctx.registry.get(id), 10_000, 'WA call gone');
      } finally {
        await user.close().catch(() => undefined);
      }
    }

    // WhatsApp calls one at a time (each is a full werift ICE+DTLS peer in this same process, on a
    // shared 2-core box); SIP calls run CONCURRENCY at a time around them.
    let waChain: Promise<void> = Promise.resolve();
    const run = (k: number) => {
      const path = pathOf(k);
      if (!path.startsWith('wa-')) return sipCall(path, k);
      const next = waChain.then(() => whatsappCall(path, k));
      waChain = next.catch(() => undefined);
      return next;
    };
    const settle = async () => {
      await waitFor(() => gw.ctx.registry.size === 0 && wa.activeCount === 0, 15_000, 'registry empty');
      await sleep(4000); // SIP transaction timers (64·T1), HTTP keep-alive, werift close
    };

    // Warm-up: one call of every path (lazy imports, pools, first-use caches), then the baseline.
    for (let k = 0; k < 14; k++) await run(k);
    await settle();
    const before = await snapshot(gw);

    const t0 = Date.now();
    for (let k = 14; k < 14 + CALLS; k += CONCURRENCY)
      await Promise.all(Array.from({ length: Math.min(CONCURRENCY, 14 + CALLS - k) }, (_, i) => run(k + i)));
    const elapsed = Date.now() - t0;
    await settle();
    const after = await snapshot(gw);

    const report = {
      calls: CALLS,
      elapsedMs: elapsed,
      causes: Object.fromEntries(causes),
      waSetupFailures: waSetupFailures.length,
      before,
      after,
    };
    console.log(`soak report ${JSON.stringify(report)}`);
    // Every path ended the way it was meant to, at least once per cycle.
    for (const path of Object.keys(EXPECTED_CAUSE) as Path[]) {
      const front = path.startsWith('wa-') ? 'whatsapp' : 'sip';
      expect(causes.get(`${front}:${EXPECTED_CAUSE[path]}`) ?? 0, path).toBeGreaterThan(0);
    }
    expect(waSetupFailures.length).toBeLessThanOrEqual(Math.ceil(CALLS / 7 / 10)); // ≤ 10% of WhatsApp calls
    expect(after.registry).toBe(0);
    expect(after.udp).toBe(before.udp);
    // process.getActiveResourcesInfo(): every kind back to its baseline count (timers and client TCP
    // sockets within a small tolerance for in-flight keep-alive/housekeeping), nothing new.
    const tolerance: Record<string, number> = { Timeout: TIMER_TOLERANCE, TCPWrap: TCP_TOLERANCE };
    for (const kind of new Set([...Object.keys(before.resources), ...Object.keys(after.resources)]))
      expect(after.resources[kind] ?? 0, kind).toBeLessThanOrEqual(
        (before.resources[kind] ?? 0) + (tolerance[kind] ?? 0),
      );
    expect(after.heapMB).toBeLessThan(before.heapMB + HEAP_TOLERANCE_MB);
    expect(sessions.size).toBe(0);
  }, 300_000);
});
