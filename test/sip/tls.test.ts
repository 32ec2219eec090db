import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer as createTcpServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect, type TLSSocket } from 'node:tls';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { AiBackend } from '../../src/ai/session.js';
import { parseConfig } from '../../src/config/load.js';
import { l16 } from '../../src/core/audio/format.js';
import type { Call } from '../../src/core/call.js';
import type { GatewayError } from '../../src/core/errors.js';
import { testLogger } from '../../src/core/logger.js';
import { Gateway } from '../../src/gateway.js';
import { EmbeddedSipEngine, SipStreamFramer } from '../../src/sip/embedded.js';
import type { SipDialog } from '../../src/sip/engine.js';
import { SipFront } from '../../src/sip/front.js';
import { parseMessage, parseVia, tagOf, type SipMessage } from '../../src/sip/message.js';
import { readOffer } from '../../src/sip/sdp.js';
import { dominantFrequency, loudestToneDb } from '../support/audio.js';
import { api, loopbackSipConfig, TEST_TOKEN, waitFor } from '../support/gateway.js';
import { RtpToneEndpoint } from '../peers/openai-sip/sip-peer.js';
import { newId, sdpOffer } from '../peers/sip/udp-peer.js';
import { ToneAi } from '../peers/tone-ai.js';
import { leasePortRange } from '../support/ports.js';

const T1 = 50;

// ---- A throwaway PKI made with the openssl binary: a test CA, a server cert it signed, a rogue one.
let dir = '';
const pem = (f: string) => join(dir, f);
function openssl(...args: string[]): void {
  execFileSync('openssl', args, { cwd: dir, stdio: 'pipe' });
}
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'sip-tls-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  const san = 'subjectAltName=DNS:localhost,IP:127.0.0.1';
  openssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.pem',
    '-days',
    '2',
    '-subj',
    '/CN=Test SIP CA',
    '-addext',
    'basicConstraints=critical,CA:TRUE',
    '-addext',
    'keyUsage=critical,keyCertSign,cRLSign',
  );
  openssl('req', ...ec, '-keyout', 'server.key', '-out', 'server.csr', '-subj', '/CN=localhost');
  writeFileSync(pem('ext.cnf'), `${san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n`);
  openssl(
    'x509',
    '-req',
    '-in',
    'server.csr',
    '-CA',
    'ca.pem',
    '-CAkey',
    'ca.key',
    '-CAcreateserial',
    '-out',
    'server.pem',
    '-days',
    '2',
    '-extfile',
    'ext.cnf',
  );
  // Same names, but signed by nobody we trust.
  openssl(
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'rogue.key',
    '-out',
    'rogue.pem',
    '-days',
    '2',
    '-subj',
    '/CN=localhost',
    '-addext',
    san,
  );
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// ---- A carrier / UAS speaking raw SIP over one TLS socket.
class TlsSipPeer {
  readonly received: SipMessage[] = [];
  closed = false;
  constructor(readonly socket: TLSSocket | Socket) {
    const framer = new SipStreamFramer();
    socket.on('data', (d: Buffer) => {
      for (const m of framer.push(d).messages) {
        const p = parseMessage(m);
        if (p.ok) this.received.push(p.msg);
      }
    });
    socket.on('close', () => (this.closed = true));
    socket.on('error', () => undefined);
  }

  send(lines: string[], body = ''): void {
    const head = [...lines, `Content-Length: ${Buffer.byteLength(body)}`, '', ''].join('\r\n');
    this.socket.write(head + body);
  }

  async waitFor(pred: (m: SipMessage) => boolean, what: string, timeoutMs = 3000): Promise<SipMessage> {
    await waitFor(() => this.received.some(pred), timeoutMs, what);
    return this.received.find(pred)!;
  }
}

const isReq = (method: string) => (m: SipMessage) => m.kind === 'request' && m.method === method;
const isRes = (status: number, method: string) => (m: SipMessage) =>
  m.kind === 'response' && m.status === status && !!m.headers.get('cseq')?.endsWith(method);

/** The gateway with its SIP front on an embedded engine with TLS (T1 = 50 ms) and a 440 Hz tone AI. */
async function startGateway(tls: Record<string, unknown>, trunks: Record<string, unknown>[] = []) {
  const [rtpMin] = leasePortRange(100);
  const config = parseConfig(
    {
      ...loopbackSipConfig(rtpMin, rtpMin + 19, { tls }),
      api: { token: TEST_TOKEN },
      trunks: [{ name: 'lab', allow: ['127.0.0.1/32'], countryCode: '250', nationalPrefix: '0' }, ...trunks],
      routes: { local: { kind: 'local' } },
    },
    {},
  );
  expect(config.sip.tls?.verifyServer).toBe(true);
  const gw = new Gateway(config, testLogger());
  const sessions: ToneAi[] = [];
  const backend: AiBackend = {
    kind: 'local',
    open(o) {
      const s = new ToneAi(440, { format: l16(8000), control: o.control });
      sessions.push(s);
      return s;
    },
  };
  gw.ctx.backends.register('local', () => backend);
  const sip = config.sip;
  const engine = new EmbeddedSipEngine({
    host: sip.host,
    port: sip.port,
    publicAddress: sip.publicAddress,
    log: gw.ctx.log,
    tls: sip.tls,
    t1Ms: T1,
    t2Ms: 4 * T1,
  });
  const front = new SipFront(gw.ctx, { engine });
  gw.addFront(front);
  await gw.start();
  cleanups.push(() => gw.stop('test_done', 0));
  return { gw, engine, front, sessions };
}

function expectTone(pcm: Int16Array, hz: number): void {
  expect(pcm.length).toBeGreaterThan(6400); // at least 0.8 s measured
  expect(Math.abs(dominantFrequency(pcm, 8000) - hz) / hz).toBeLessThan(0.02);
  expect(loudestToneDb(pcm, 8000, hz)).toBeGreaterThan(-20);
}

/** Waits until each direction has 1.2 s past the 10 skipped frames (media may start late on a loaded box). */
async function bothWays(carrier: { heard(skip: number): Int16Array }, ai: { heardPcm(skip: number): Int16Array }) {
  await waitFor(
    () => carrier.heard(10).length >= 9600 && ai.heardPcm(10).length >= 9600,
    10_000,
    '1.2 s of audio both ways',
  );
}

describe('SIP over TLS (embedded engine, throwaway CA from openssl)', () => {
  it('a carrier calls the TLS listener: 200 over TLS with TLS Contact, audio both ways, BYE both ways', async () => {
    const { gw, engine, front, sessions } = await startGateway({
      port: 0,
      cert: pem('server.pem'),
      key: pem('server.key'),
    });
    const tlsPort = engine.portFor('tls');
    expect(tlsPort).toBeGreaterThan(0);
    expect(tlsPort).not.toBe(engine.port);
    expect(engine.describe().tls).toBe(`127.0.0.1:${tlsPort}`);

    // A scanner sending cleartext to the TLS port: its handshake fails, nothing else happens.
    const scanner = createConnection({ host: '127.0.0.1', port: tlsPort });
    scanner.on('error', () => undefined);
    scanner.write('OPTIONS sip:x@127.0.0.1 SIP/2.0\r\n\r\n');
    await new Promise<void>((r) => scanner.once('close', () => r()));

    // The carrier verifies the gateway's certificate against the test CA (SNI localhost).
    const { readFileSync } = await import('node:fs');
    const sock = tlsConnect({
      host: '127.0.0.1',
      port: tlsPort,
      servername: 'localhost',
      ca: readFileSync(pem('ca.pem')),
    });
    await new Promise<void>((resolve, reject) => {
      sock.once('secureConnect', resolve);
      sock.once('error', reject);
    });
    cleanups.push(() => void sock.destroy());
    expect(sock.authorized).toBe(true);
    const carrier = new TlsSipPeer(sock);
    const localPort = sock.localPort!;

    const place = async (rtpPort: number) => {
      const callId = newId();
      const media = new RtpToneEndpoint(700);
      const mport = await media.start();
      cleanups.push(() => media.close());
      const created = new Promise<Call>((r) => gw.ctx.registry.once('created', r));
      carrier.send(
        [
          `INVITE sips:0700000001@localhost:${tlsPort} SIP/2.0`,
          `Via: SIP/2.0/TLS 127.0.0.1:${localPort};branch=z9hG4bK${newId()};rport`,
          `From: <sips:0788123456@127.0.0.1>;tag=carrier${rtpPort}`,
          `To: <sips:0700000001@localhost>`,
          `Call-ID: ${callId}`,
          'CSeq: 1 INVITE',
          `Contact: <sip:carrier@127.0.0.1:${localPort};transport=tls>`,
          'Max-Forwards: 70',
          'Content-Type: application/sdp',
        ],
        sdpOffer(mport, 'sendrecv', '0 101'),
      );
      const ok = await carrier.waitFor((m) => isRes(200, 'INVITE')(m) && m.headers.get('call-id') === callId, '200');
      const call = await created;
      return { callId, ok, call, media };
    };

    // Call 1: the gateway hangs up (API DELETE) → BYE over the carrier's TLS connection.
    const c1 = await place(1);
    expect(parseVia(c1.ok.headers.get('via')!)!.transport).toBe('TLS');
    // A sips: request gets a sips: Contact at the TLS listener (RFC 5630).
    expect(c1.ok.headers.get('contact')).toBe(`<sips:gateway@127.0.0.1:${tlsPort}>`);
    const toTag = tagOf(c1.ok.headers.get('to'))!;
    const answer = readOffer(c1.ok.body, ['PCMU'], true);
    expect(answer.ok).toBe(true);
    if (!answer.ok) return;
    c1.media.setRemote(answer.offer.address, answer.offer.port, answer.offer.codec, answer.offer.payloadType);
    carrier.send([
      `ACK sips:gateway@127.0.0.1:${tlsPort} SIP/2.0`,
      `Via: SIP/2.0/TLS 127.0.0.1:${localPort};branch=z9hG4bK${newId()};rport`,
      `From: <sips:0788123456@127.0.0.1>;tag=carrier1`,
      `To: <sips:0700000001@localhost>;tag=${toTag}`,
      `Call-ID: ${c1.callId}`,
      'CSeq: 1 ACK',
      'Max-Forwards: 70',
    ]);
    c1.media.startSending();
    await waitFor(() => c1.call.state === 'bridged', 3000, 'call bridged');
    await bothWays(c1.media, sessions[0]!);
    expectTone(c1.media.heard(10), 440); // the carrier hears the AI
    expectTone(sessions[0]!.heardPcm(10), 700); // the AI hears the carrier
    const del = await api(gw)('DELETE', `/v1/calls/${c1.call.id}`, {});
    expect(del.status).toBe(200);
    const bye = await carrier.waitFor(isReq('BYE'), 'BYE from the gateway');
    expect(parseVia(bye.headers.get('via')!)!.transport).toBe('TLS');
    expect(bye.headers.get('call-id')).toBe(c1.callId);
    carrier.send([
      'SIP/2.0 200 OK',
      `Via: ${bye.headers.get('via')}`,
      `From: ${bye.headers.get('from')}`,
      `To: ${bye.headers.get('to')}`,
      `Call-ID: ${c1.callId}`,
      `CSeq: ${bye.headers.get('cseq')}`,
    ]);
    await waitFor(() => engine.activeState.clientTxs === 0, 2000, 'BYE transaction answered');

    // Call 2: the carrier hangs up.
    const c2 = await place(2);
    const toTag2 = tagOf(c2.ok.headers.get('to'))!;
    const dialogLines = (method: string, cseq: number) => [
      `${method} sips:gateway@127.0.0.1:${tlsPort} SIP/2.0`,
      `Via: SIP/2.0/TLS 127.0.0.1:${localPort};branch=z9hG4bK${newId()};rport`,
      `From: <sips:0788123456@127.0.0.1>;tag=carrier2`,
      `To: <sips:0700000001@localhost>;tag=${toTag2}`,
      `Call-ID: ${c2.callId}`,
      `CSeq: ${cseq} ${method}`,
      'Max-Forwards: 70',
    ];
    carrier.send(dialogLines('ACK', 1));
    await waitFor(() => c2.call.state === 'bridged', 3000, 'second call bridged');
    carrier.send(dialogLines('BYE', 2));
    const byeOk = await carrier.waitFor(
      (m) => isRes(200, 'BYE')(m) && m.headers.get('call-id') === c2.callId,
      '200 for the carrier BYE',
    );
    expect(parseVia(byeOk.headers.get('via')!)!.transport).toBe('TLS');
    await waitFor(() => c2.call.ended, 2000, 'second call ended');
    expect(c2.call.endReason).toMatchObject({ by: 'remote' });
    await waitFor(() => front.ports.used === 0, 3000, 'RTP ports released');
    expect(engine.activeState.dialogs).toBe(0);
    // The carrier's connection is the carrier's: it stays open for its next call.
    expect(carrier.closed).toBe(false);
    expect(engine.streamConnections.tls).toBe(1);
  });

  it('dials a TLS UAS by a transport=tls URI (SNI localhost, test CA): audio, its BYE over the same connection', async () => {
    // The UAS (a phone or OpenAI's SIP endpoint): the embedded engine with a TLS listener, playing 700 Hz.
    const uas = new EmbeddedSipEngine({
      host: '127.0.0.1',
      port: 0,
      publicAddress: '127.0.0.1',
      log: testLogger(),
      tls: { port: 0, cert: pem('server.pem'), key: pem('server.key') },
    });
    const media = new RtpToneEndpoint(700);
    let uasDialog: SipDialog | undefined;
    let invited: { uri: string; via: string; contact: string } | undefined;
    uas.on('invite', (inv) => {
      invited = { uri: inv.requestUri, via: inv.header('via')!, contact: inv.header('contact')! };
      const offered = readOffer(inv.sdp ?? '', ['PCMU'], true);
      if (!offered.ok) return inv.reject(488);
      void media.answer(offered.offer).then(async (sdp) => {
        uasDialog = await inv.answer(sdp);
        media.startSending();
      });
    });
    await uas.start();
    cleanups.push(async () => {
      media.close();
      await uas.stop();
    });
    const uasPort = uas.portFor('tls');

    // The gateway has no TLS listener: only the connection it opened can carry the UAS's BYE.
    const { gw, engine, front, sessions } = await startGateway({ ca: pem('ca.pem') }, [
      {
        name: 'tls-lab',
        allow: ['127.0.0.3/32'],
        countryCode: '250',
        dialUri: `sip:localhost:${uasPort};transport=tls`,
      },
    ]);
    expect(engine.transports.tlsListening).toBe(false);
    const placed = await api(gw)('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'tls-lab' });
    expect(placed.status, JSON.stringify(placed.body)).toBe(201);
    const call = gw.ctx.registry.get(placed.body.id as string)!;
    await waitFor(() => call.state === 'bridged', 5000, 'outbound TLS call bridged');
    expect(invited!.uri).toBe(`sip:+250788123456@localhost:${uasPort};transport=tls`);
    expect(invited!.via).toMatch(/^SIP\/2\.0\/TLS 127\.0\.0\.1:5061;/);
    expect(invited!.contact).toBe('<sip:gateway@127.0.0.1:5061;transport=tls>');
    expect(engine.streamConnections.tls).toBe(1);
    await bothWays(media, sessions[0]!);
    expectTone(media.heard(10), 440);
    expectTone(sessions[0]!.heardPcm(10), 700);

    // The UAS hangs up: its BYE reaches us over the same connection (nothing listens on 5061), and
    // it opened no other one.
    await uasDialog!.bye('openai_hangup');
    expect(uas.streamConnections.tls).toBe(1);
    await waitFor(() => call.ended, 2000, 'call ended by the UAS BYE');
    expect(call.endReason).toMatchObject({ by: 'remote', cause: 'bye' });
    await waitFor(() => front.ports.used === 0 && front.dialer!.activeCount === 0, 3000, 'leg released');
    expect(engine.activeState.dialogs).toBe(0);
    // Our outbound connection is closed once the INVITE transaction's 2xx window (64·T1) is over.
    await waitFor(() => engine.streamConnections.tls === 0, 64 * T1 + 2000, 'outbound TLS connection closed');
    expect(engine.uacTxCount).toBe(0);
  });

  it('a server certificate from an untrusted issuer fails the dial, naming the certificate problem; nothing is left', async () => {
    // The impostor: a TLS endpoint with a self-signed certificate for the right names.
    const { createServer: createTlsServer } = await import('node:tls');
    const { readFileSync } = await import('node:fs');
    let handshakes = 0;
    let sipBytes = 0;
    const rogue = createTlsServer(
      { cert: readFileSync(pem('rogue.pem')), key: readFileSync(pem('rogue.key')) },
      (s) => {
        handshakes++;
        s.on('data', (d: Buffer) => (sipBytes += d.length));
        s.on('error', () => undefined);
      },
    );
    rogue.on('tlsClientError', () => undefined);
    await new Promise<void>((r) => rogue.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => new Promise<void>((r) => rogue.close(() => r())));
    const roguePort = (rogue.address() as { port: number }).port;

    // A TCP endpoint that never answers the TLS handshake: the connect deadline.
    const silent: Socket[] = [];
    const mute: Server = createTcpServer((s) => silent.push(s));
    await new Promise<void>((r) => mute.listen(0, '127.0.0.1', () => r()));
    cleanups.push(() => {
      for (const s of silent) s.destroy();
      return new Promise<void>((r) => mute.close(() => r()));
    });
    const mutePort = (mute.address() as { port: number }).port;

    const { gw, engine, front } = await startGateway({ ca: pem('ca.pem') }, [
      {
        name: 'rogue',
        allow: ['127.0.0.3/32'],
        countryCode: '250',
        dialUri: `sip:localhost:${roguePort};transport=tls`,
      },
    ]);

    const err = (await engine
      .invite({
        uri: `sip:proj_x@localhost:${roguePort};transport=tls`,
        from: 'gw',
        sdp: sdpOffer(40000),
        timeoutMs: 5000,
        callId: 'call-tls-1',
      })
      .catch((e: unknown) => e)) as GatewayError;
    expect(err.code).toBe('upstream');
    expect(err.callId).toBe('call-tls-1');
    expect(err.message).toMatch(
      /SIP tls connection to localhost 127\.0\.0\.1:\d+ failed: server certificate rejected: .*certificate/i,
    );
    expect(err.message).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY/);

    // Through the gateway: the call ends as a failed dial with that reason, and nothing is held.
    const placed = await api(gw)('POST', '/v1/calls', { front: 'sip', to: '+250788123456', trunk: 'rogue' });
    expect(placed.status).toBe(201);
    const id = placed.body.id as string;
    await waitFor(() => gw.ctx.registry.get(id)?.ended !== false, 3000, 'call ended');
    const rec = await api(gw)('GET', `/v1/calls/${id}`);
    expect(rec.body.endReason).toMatchObject({ by: 'error', cause: 'dial_failed' });
    expect(String((rec.body.endReason as { detail: string }).detail)).toMatch(/server certificate rejected/);
    expect(handshakes).toBe(0); // the handshake never completed
    expect(sipBytes).toBe(0); // no INVITE went to the impostor

    // No TLS answer within the connect timeout: a timeout error saying so.
    const t0 = performance.now();
    const slow = (await engine
      .invite({
        uri: `sip:proj_x@127.0.0.1:${mutePort};transport=tls`,
        from: 'gw',
        sdp: sdpOffer(40000),
        timeoutMs: 5000,
        connectTimeoutMs: 300,
      })
      .catch((e: unknown) => e)) as GatewayError;
    expect(slow.code).toBe('timeout');
    expect(slow.message).toMatch(/SIP tls connection to 127\.0\.0\.1:\d+: no connection within 300 ms/);
    // Timers never fire early; the upper bound only says it was the connect timer, not the 5 s dial timeout.
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(performance.now() - t0).toBeLessThan(5000);

    expect(gw.ctx.registry.countActive(() => true)).toBe(0);
    expect(front.ports.used).toBe(0);
    expect(front.dialer!.activeCount).toBe(0);
    expect(engine.uacTxCount).toBe(0);
    expect(engine.activeState).toEqual({ dialogs: 0, invites: 0, clientTxs: 0 });
    expect(engine.streamConnections.tls).toBe(0);
  });

  it('an unreadable certificate fails start() with the path, before any port is bound', async () => {
    const engine = new EmbeddedSipEngine({
      host: '127.0.0.1',
      port: 0,
      publicAddress: '127.0.0.1',
      log: testLogger(),
      tls: { port: 0, cert: pem('missing.pem'), key: pem('server.key') },
    });
    await expect(engine.start()).rejects.toThrow(/sip\.tls\.cert: cannot read .*missing\.pem/);
    expect(engine.ready()).toBe(false);
  });

  it('rejects half a TLS listener in config (cert without key)', () => {
    expect(() => parseConfig({ sip: { tls: { cert: pem('server.pem') } } }, {})).toThrow(
      /cert and sip\.tls\.key go together/,
    );
  });
});
