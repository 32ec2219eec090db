import type { Call, SignallingMessage } from '../core/call.js';

/** Bounds on what the ladder holds for SIP Call-IDs no call has claimed yet (strangers' traffic included). */
const MAX_PENDING_CALL_IDS = 500;
const MAX_PENDING_PER_CALL_ID = 20;
/** One message's text kept at most (a large SDP or SIP-I body is cut, marked with its full size). */
const MAX_MESSAGE_CHARS = 8 * 1024;

/**
 * Every SIP message of a call, for the console's ladder diagram. The engine reports each message
 * it sends or receives; messages are grouped by Call-ID. Before a call claims its Call-ID (the
 * INVITE, 100, a 401 challenge) they wait in a small bounded buffer; once claimed they go to the
 * call itself (bounded there by limits.maxSignallingMessages).
 */
export class SipLadder {
  private readonly pending = new Map<string, SignallingMessage[]>();
  private readonly claimed = new Map<string, Call>();

  /** One message as it went on or came off the wire. */
  record(direction: 'in' | 'out', buf: Buffer, peer: { address: string; port: number; transport: string }): void {
    if (buf.length <= 4) return; // keep-alive
    const head = buf.subarray(0, Math.min(buf.length, 4096)).toString('latin1');
    const callId = /\r\n(?:call-id|i)[ \t]*:[ \t]*([^\r\n]+)/i.exec(head)?.[1]?.trim();
    if (!callId) return;
    const text =
      buf.length > MAX_MESSAGE_CHARS ? buf.subarray(0, MAX_MESSAGE_CHARS).toString('utf8') : buf.toString('utf8');
    const msg: SignallingMessage = {
      at: Date.now(),
      direction,
      protocol: 'sip',
      peer: `${peer.transport}:${peer.address.includes(':') ? `[${peer.address}]` : peer.address}:${peer.port}`,
      summary: summarise(head),
      raw: buf.length > MAX_MESSAGE_CHARS ? `${text}\n… (${buf.length} bytes)` : text,
    };
    const call = this.claimed.get(callId);
    if (call) return call.addSignalling(msg);
    let list = this.pending.get(callId);
    if (!list) {
      if (this.pending.size >= MAX_PENDING_CALL_IDS) this.pending.delete(this.pending.keys().next().value!);
      list = [];
      this.pending.set(callId, list);
    }
    if (list.length < MAX_PENDING_PER_CALL_ID) list.push(msg);
  }

  /** A call owns this Call-ID: what was buffered moves to it, and so does everything after. */
  claim(sipCallId: string, call: Call): void {
    for (const m of this.pending.get(sipCallId) ?? []) call.addSignalling(m);
    this.pending.delete(sipCallId);
    this.claimed.set(sipCallId, call);
    // Late messages (the 200 to our BYE) still reach the live call view for a moment after it ends.
    call.once('ended', () => setTimeout(() => this.claimed.delete(sipCallId), 32_000).unref());
  }
}

/** `INVITE` / `200 OK (INVITE)`: the request method, or the status with its CSeq method. */
function summarise(head: string): string {
  const first = head.slice(0, head.indexOf('\r\n'));
  const status = /^SIP\/2\.0 (\d{3}) ?(.*)$/.exec(first);
  if (!status) return first.split(' ')[0] ?? first;
  const method = /\r\n(?:cseq)[ \t]*:[ \t]*\d+[ \t]+(\S+)/i.exec(head)?.[1];
  return `${status[1]} ${status[2]}${method ? ` (${method})` : ''}`;
}
