import { createSocket } from 'node:dgram';
import { expect } from 'vitest';
import type { Call } from '../../src/core/call.js';
import { RealtimeTestServer } from '../peers/realtime/server.js';
import {
  nextCall,
  runSipp,
  SIPP_NUMS,
  sippTarget,
  startSipHarness,
  type SipHarness,
  type SipHarnessOptions,
} from '../peers/sip/harness.js';
import { RtpEndpoint } from '../peers/sip/rtp-endpoint.js';
import { dominantFrequency, toneLevelDb } from '../support/audio.js';
import { waitFor } from '../support/gateway.js';
import { freeUdpPort } from '../support/free-ports.js';
import { udpBound } from '../support/udp.js';

/**
 * Handing a SIP caller to a person (issue 19) with real sipp processes for both parties: sipp does
 * the signalling, a test RTP endpoint per party plays a tone and records what it hears, and the
 * local Realtime stand-in plays the AI that calls transfer_call / send_dtmf. Shared by the
 * handoff test files (one of them runs on both SIP engines).
 */
export const CALLER_HZ = 500;
export const HUMAN_HZ = 1300;

export type Cleanups = (() => Promise<unknown> | unknown)[];

export interface Rig {
  h: SipHarness;
  rt: RealtimeTestServer;
  phonePort: number;
  caller: RtpEndpoint;
  call: Call;
  callerSipp: ReturnType<typeof runSipp>;
}

export interface RigOptions {
  transfer: Record<string, unknown>;
  dtmf?: Record<string, unknown>;
  maxCalls?: number;
  /** The gateway (default the embedded engine); a test file on both engines passes its fixture's. */
  start?: (opts: SipHarnessOptions) => Promise<SipHarness>;
  /** The gateway's stop is the fixture's when `start` is given. */
  stopsItself?: boolean;
}

/** A gateway whose trunk dials the person at a sipp UAS, and a sipp caller already bridged to the AI. */
export async function setup(cleanups: Cleanups, o: RigOptions): Promise<Rig> {
  const rt = new RealtimeTestServer({});
  await rt.start();
  cleanups.push(() => rt.stop());
  const phonePort = await freeUdpPort();
  const h = await (o.start ?? startSipHarness)({
    trunks: [
      {
        name: 'mtn-rwanda',
        allow: ['127.0.0.1/32'],
        countryCode: '250',
        nationalPrefix: '0',
        maxCalls: o.maxCalls ?? 60,
        dialUri: `sip:127.0.0.1:${phonePort}`,
      },
    ],
    routes: {
      agent: {
        kind: 'realtime',
        url: rt.url,
        apiKey: 'sk-test-0123456789',
        firstTurn: { mode: 'none' },
        transfer: { ringTimeoutSec: 5, ...o.transfer },
        ...(o.dtmf ? { dtmf: o.dtmf } : {}),
      },
    },
    defaultRoute: 'agent',
  });
  if (!o.stopsItself) cleanups.push(() => h.stop());
  const caller = new RtpEndpoint();
  const rtpPort = await caller.start();
  cleanups.push(() => caller.stop());
  const created = nextCall(h);
  const callerSipp = runSipp({
    scenario: 'uac-handoff.xml',
    target: sippTarget(h),
    vars: { ...SIPP_NUMS, RTPPORT: String(rtpPort), REFER_STATUS: '403 Forbidden' },
    timeoutSec: 60,
  });
  cleanups.push(() => callerSipp);
  const call = await created;
  cleanups.push(() => call.end({ by: 'operator', cause: 'test_done' }));
  await waitFor(() => call.state === 'bridged' && rt.connections.length === 1, 8000, 'bridged to the AI');
  await rt.until(() => rt.connections[0]!.session.tools !== undefined, 5000, 'session configured');
  return { h, rt, phonePort, caller, call, callerSipp };
}

/** The person: a sipp UAS at the trunk's dial URI with its media at a test RTP endpoint playing HUMAN_HZ. */
export async function person(
  cleanups: Cleanups,
  rig: Pick<Rig, 'phonePort'>,
  vars: { user: string; ringMs: number; talkMs: number; timeoutSec?: number },
) {
  const human = new RtpEndpoint();
  human.freq = HUMAN_HZ;
  const rtpPort = await human.start();
  cleanups.push(() => human.stop());
  const sipp = runSipp({
    scenario: 'uas-party.xml',
    target: '127.0.0.1:5060', // unused by a UAS
    vars: {
      RTPPORT: String(rtpPort),
      EXPECT_USER: vars.user,
      RING_MS: String(vars.ringMs),
      TALK_MS: String(vars.talkMs),
    },
    args: ['-p', String(rig.phonePort)],
    timeoutSec: vars.timeoutSec ?? 25,
  });
  cleanups.push(() => sipp);
  await udpBound(rig.phonePort);
  return { human, sipp };
}

/** The AI asks for a transfer on the next caller turn. */
export function aiTransfers(rt: RealtimeTestServer, args: Record<string, unknown>): void {
  rt.configure({ toolCalls: { 1: { name: 'transfer_call', arguments: args } } });
  rt.callerTurn('please put me through to a person');
}

export function expectTone(pcm: Int16Array, hz: number): void {
  expect(pcm.length).toBeGreaterThan(4000);
  expect(Math.abs(dominantFrequency(pcm, 8000) - hz)).toBeLessThan(hz * 0.02);
  expect(toneLevelDb(pcm, 8000, hz)).toBeGreaterThan(-20);
}

/** A bare UDP socket at the person's address, counting datagrams (none expected). */
export async function udpListen(port: number): Promise<{ received: number; close(): void }> {
  const sock = createSocket('udp4');
  const state = { received: 0, close: () => sock.close() };
  sock.on('message', () => state.received++);
  await new Promise<void>((r) => sock.bind(port, '127.0.0.1', () => r()));
  return state;
}

/** Calls holding a slot in the cap `key` (polled: the count is async on a shared store). */
export async function waitSlots(h: SipHarness, key: string, n: number): Promise<void> {
  let now = -1;
  await waitFor(
    () => (void h.gw.ctx.cluster.count(key).then((c) => (now = c)), now === n),
    5000,
    `${n} calls in ${key}`,
  );
}
