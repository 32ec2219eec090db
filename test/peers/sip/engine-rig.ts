import { testLogger } from '../../../src/core/logger.js';
import { EmbeddedSipEngine, type EmbeddedEngineOptions } from '../../../src/sip/embedded.js';
import type { IncomingInvite } from '../../../src/sip/engine.js';
import { RawSipPeer } from './udp-peer.js';

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

  async stop(): Promise<void> {
    await this.engine.stop();
    for (const p of this.peers.splice(0)) p.close();
  }
}
