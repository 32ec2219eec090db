import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';

export interface RelayOptions {
  /** Per cent of RTP packets (not STUN, DTLS or RTCP) dropped, each direction on its own. */
  lossToGateway?: number;
  lossToUser?: number;
  /** Seed of the loss pattern, so a failing run can be repeated. */
  seed?: number;
}

type Addr = { address: string; port: number };

/** Mulberry32: a small seeded PRNG (the loss pattern must be reproducible). */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** RTP (not RTCP) by RFC 7983 demultiplexing (first byte 128-191) and RFC 5761 (PT outside 64-95). */
const isRtp = (b: Buffer) =>
  b.length >= 12 && b[0]! >= 128 && b[0]! <= 191 && ((b[1]! & 0x7f) < 64 || (b[1]! & 0x7f) > 95);

/**
 * The network between a WhatsApp user and the gateway as Meta's relays make it: the user talks only
 * to `userSide` (it stands for the gateway in the answer the user applies), the gateway talks only
 * to `netSide` (the user's `typ relay` / `typ srflx` address in the offer). Everything is forwarded
 * both ways (STUN, DTLS, SRTP), so media provably crosses the relay; RTP can be dropped at a given
 * rate. Addresses are OS-allocated (port 0).
 */
export class UdpRelay {
  readonly counts = { toGateway: 0, toUser: 0, droppedToGateway: 0, droppedToUser: 0 };
  private readonly userSide: Socket = createSocket('udp4');
  private readonly netSide: Socket = createSocket('udp4');
  private readonly random: () => number;
  private gateway: Addr | undefined;
  private closed = false;

  constructor(
    private readonly user: Addr,
    private readonly opts: RelayOptions = {},
  ) {
    this.random = prng(opts.seed ?? 1);
  }

  async start(): Promise<void> {
    await Promise.all(
      [this.userSide, this.netSide].map((s) => new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()))),
    );
    this.userSide.on('message', (msg) => this.forward(msg, 'toGateway'));
    this.netSide.on('message', (msg, from: RemoteInfo) => {
      this.gateway ??= { address: from.address, port: from.port };
      this.forward(msg, 'toUser');
    });
  }

  /** The address the gateway sends to (the user's relayed/mapped candidate). */
  get netAddress(): Addr {
    return { address: '127.0.0.1', port: this.netSide.address().port };
  }

  /** The address the user sends to (stands for the gateway's candidate). */
  get userAddress(): Addr {
    return { address: '127.0.0.1', port: this.userSide.address().port };
  }

  /** Where the gateway's media socket is (its answer's candidate): the user's packets go there. */
  setGateway(gateway: Addr): void {
    this.gateway = gateway;
  }

  private forward(msg: Buffer, dir: 'toGateway' | 'toUser'): void {
    const loss = dir === 'toGateway' ? this.opts.lossToGateway : this.opts.lossToUser;
    if (loss && isRtp(msg) && this.random() * 100 < loss) {
      this.counts[dir === 'toGateway' ? 'droppedToGateway' : 'droppedToUser']++;
      return;
    }
    this.counts[dir]++;
    if (dir === 'toUser') this.userSide.send(msg, this.user.port, this.user.address);
    else if (this.gateway) this.netSide.send(msg, this.gateway.port, this.gateway.address);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.userSide.close();
    this.netSide.close();
  }
}
