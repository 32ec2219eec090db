import { Socket } from 'node:dgram';
import { afterEach, describe, expect, it } from 'vitest';
import { RTCPeerConnection } from 'werift';
import { waitFor } from '../support/gateway.js';

/**
 * werift 0.24.4's DTLS failed a handshake whenever a ClientHello was retransmitted and both copies
 * arrived (an event-loop stall of a few hundred ms on a busy box is enough; see docs/testing.md):
 * the client threw on the second HelloVerifyRequest, and the server restarted on a late cookieless
 * ClientHello after it had sent its ServerHello. The gateway is the DTLS client on calls WhatsApp
 * offers and the server on calls it places. patches/werift+0.24.4.patch (applied by npm ci's
 * postinstall) makes both ignore the late copy: the flight in progress retransmits by itself.
 *
 * Two werift peers on loopback: the offerer is the DTLS server, the answerer the client. A hook on
 * dgram sends holds the client's first ClientHello and releases it at a chosen moment.
 */
const HANDSHAKE = 22;
const CLIENT_HELLO = 1;
const HELLO_VERIFY_REQUEST = 3;
const SERVER_HELLO_DONE = 14;

/** The handshake type of a plaintext (epoch 0) DTLS handshake record, else undefined. */
function handshakeType(buf: Buffer): number | undefined {
  if (buf.length < 14 || buf[0] !== HANDSHAKE || buf.readUInt16BE(3) !== 0) return undefined;
  return buf[13];
}

const originalSend = Socket.prototype.send;
afterEach(() => {
  Socket.prototype.send = originalSend;
});

const config = () => ({
  iceUseIpv4: false,
  iceUseIpv6: false,
  iceAdditionalHostAddresses: ['127.0.0.1'],
  iceServers: [],
  bundlePolicy: 'max-bundle' as const,
});
const hostPort = (sdp: string) => Number(/a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ host/.exec(sdp)![1]);

/** A handshake record sent by one side, seen by the hook. */
interface Sent {
  from: 'client' | 'server';
  type: number | undefined;
}

/**
 * Connects a DTLS server and client, holding the client's first ClientHello until `releaseWhen`
 * says so after a send; returns what each side sent (by handshake type) and the final states.
 */
async function handshakeWithLateClientHello(releaseWhen: (sent: Sent, counts: Map<string, number>) => boolean) {
  const server = new RTCPeerConnection(config());
  const client = new RTCPeerConnection(config());
  const counts = new Map<string, number>();
  const states: string[] = [];
  try {
    let clientPort = -1;
    let serverPort = -1;
    let held: (() => void) | undefined;
    let heldOnce = false;
    Socket.prototype.send = function (this: Socket, msg: unknown, ...rest: unknown[]) {
      let port = -1;
      try {
        port = this.address().port;
      } catch {
        // not bound yet: not one of ours
      }
      const send = () => (originalSend as (...a: unknown[]) => void).call(this, msg, ...rest);
      const from = port === clientPort ? 'client' : port === serverPort ? 'server' : undefined;
      const type = from && Buffer.isBuffer(msg) ? handshakeType(msg) : undefined;
      if (!from || type === undefined) return send();
      const key = `${from}:${type}`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
      if (from === 'client' && type === CLIENT_HELLO && !heldOnce) {
        heldOnce = true;
        held = send; // the first ClientHello is "late"
        return;
      }
      send();
      if (held && releaseWhen({ from, type }, counts)) {
        setImmediate(held);
        held = undefined;
      }
    } as typeof Socket.prototype.send;

    client.connectionStateChange.subscribe((s) => states.push(`client:${s}`));
    server.connectionStateChange.subscribe((s) => states.push(`server:${s}`));
    server.addTransceiver('audio', { direction: 'sendrecv' });
    await server.setLocalDescription(await server.createOffer());
    serverPort = hostPort(server.localDescription!.sdp);
    await client.setRemoteDescription(server.localDescription!);
    await client.setLocalDescription(await client.createAnswer());
    clientPort = hostPort(client.localDescription!.sdp);
    await server.setRemoteDescription(client.localDescription!);

    const settled = (pc: RTCPeerConnection) => pc.connectionState === 'connected' || pc.connectionState === 'failed';
    await waitFor(
      () => settled(client) && settled(server),
      30_000,
      () => `states ${states.join(' ')}`,
    );
    return { counts, states, client: client.connectionState, server: server.connectionState };
  } finally {
    await Promise.all([client.close(), server.close()]);
  }
}

describe('werift DTLS with a late ClientHello (patched)', () => {
  it('client: released with its retransmission, the server answers both with a HelloVerifyRequest; the repeat is ignored and the handshake completes', async () => {
    const r = await handshakeWithLateClientHello((s) => s.from === 'client' && s.type === CLIENT_HELLO);
    expect(r.counts.get(`server:${HELLO_VERIFY_REQUEST}`)).toBeGreaterThanOrEqual(2); // the client saw a repeat
    expect(r.states).not.toContain('client:failed');
    expect([r.client, r.server]).toEqual(['connected', 'connected']);
  });

  it('server: released after its ServerHelloDone, the late cookieless ClientHello is ignored and the handshake completes', async () => {
    const r = await handshakeWithLateClientHello((s) => s.from === 'server' && s.type === SERVER_HELLO_DONE);
    expect(r.counts.get(`server:${SERVER_HELLO_DONE}`)).toBeGreaterThanOrEqual(1); // it came after flight 4
    expect(r.states).not.toContain('server:failed');
    expect([r.client, r.server]).toEqual(['connected', 'connected']);
  });
});
