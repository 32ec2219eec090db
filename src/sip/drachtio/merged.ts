import type { SrfRequestLike, SrfResponseLike } from './srf-types.js';

/** 64·T1: an INVITE server transaction cannot outlive this, so neither does its entry. */
const INVITE_TX_MS = 64 * 500;

/**
 * RFC 3261 §8.2.2.2 merged requests: the same out-of-dialog INVITE (Call-ID, From tag, CSeq) on a
 * second branch (a fork merging back, a routing loop) while the first is still unanswered must get
 * 482. drachtio-server hands each branch to us as a new INVITE, so the engine tracks them here.
 * Entries go with the first INVITE's final response or CANCEL, or after 64·T1 at the latest,
 * so a stranger cannot make them pile up.
 */
export class MergedInviteGuard {
  private readonly open = new Map<string, NodeJS.Timeout>();

  /** True when `req` merges with an INVITE still in progress (answer it 482). */
  isMerged(req: SrfRequestLike, res: SrfResponseLike): boolean {
    const fromTag = /;\s*tag=([^;>\s]+)/i.exec(req.get('From') ?? '')?.[1] ?? '';
    const key = `${req.get('Call-ID') ?? ''}\n${fromTag}\n${req.get('CSeq') ?? ''}`;
    if (this.open.has(key)) return true;
    const forget = () => {
      clearTimeout(this.open.get(key));
      this.open.delete(key);
    };
    this.open.set(key, setTimeout(forget, INVITE_TX_MS).unref());
    res.once?.('end', forget);
    req.on('cancel', forget);
    return false;
  }

  get size(): number {
    return this.open.size;
  }

  clear(): void {
    for (const t of this.open.values()) clearTimeout(t);
    this.open.clear();
  }
}
