import { testLogger } from '../../../src/core/logger.js';
import { EmbeddedSipEngine, type EmbeddedEngineOptions } from '../../../src/sip/embedded.js';
import type { IncomingInvite, SipDialog } from '../../../src/sip/engine.js';
import { tagOf } from '../../../src/sip/message.js';
import { waitFor } from '../../support/gateway.js';
import { newId, RawSipPeer, request, sdpOffer } from './udp-peer.js';

/** T1 the engine tests run with: every RFC 3261 timer scaled down 10× (T2 = 4·T1). */
export const RIG_T1 = 50;

/**
 * The embedded engine on a free port with fast timers, plus raw UDP peers that play the far end:
 * the one set-up every engine-level test (transactions, PRACK, floods, UAC) shares.
 */
export class EngineRig {
  readonly invites: IncomingInvite[] = [];
  private readonly peers: RawSipPeer[] = [];

  private constructor(readonly engine: EmbeddedSipEngine) {
    engine.on('invite', (i) => this.invites.push(i));
  }

  static async start(opts: Partial<EmbeddedEngineOptions> = {}): Promise<EngineRig> {
    const engine = new EmbeddedSipEngine({
      host: '127.0.0.1',
      port: 0,
      publicAddress: '127.0.0.1',
      log: testLogger(),
      t1Ms: RIG_T1,
      t2Ms: 4 * RIG_T1,
      ...opts,
    });
    await engine.start();
    return new EngineRig(engine);
  }

  /** A new raw UDP peer, closed by stop(). */
  async peer(): Promise<RawSipPeer> {
    const p = new RawSipPeer();
    await p.start();
    this.peers.push(p);
    return p;
  }

  /**
   * A dialog the engine has answered: `peer` INVITEs (an offer on 4000), the engine answers, the
   * peer ACKs its 200.
   */
  async established(peer: RawSipPeer): Promise<{ dialog: SipDialog; callId: string; toTag: string }> {
    const port = this.engine.port;
    const n = this.invites.length;
    const callId = newId();
    peer.send(request({ callId, localPort: peer.port, targetPort: port, sdp: sdpOffer(4000) }), port);
    await waitFor(() => this.invites.length === n + 1, 2000, 'invite');
    const answered = this.invites[n]!.answer('v=0\r\n');
    const ok = await peer.waitFor(
      (m) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId,
      1000,
      '200',
    );
    const toTag = tagOf(ok.headers.get('to'))!;
    peer.send(request({ callId, method: 'ACK', toTag, localPort: peer.port, targetPort: port }), port);
    return { dialog: await answered, callId, toTag };
  }

  async stop(): Promise<void> {
    await this.engine.stop();
    for (const p of this.peers.splice(0)) p.close();
  }
}
