import { tagOf, type SipMessage, type SipResponse } from '../../../src/sip/message.js';
import { readOffer } from '../../../src/sip/sdp.js';
import type { RtpToneEndpoint } from '../openai-sip/sip-peer.js';
import { newId, type RawSipPeer } from './udp-peer.js';

export interface CarrierCall {
  callId: string;
  toTag: string;
  /** The gateway's 200 to the INVITE. */
  ok: SipResponse;
  /** Sends a body-less in-dialog request (e.g. BYE) to the gateway. */
  send(method: string, cseq: number): void;
}

/**
 * A carrier's call, signalled by hand from a raw UDP peer: INVITE to `to` with a PCMU offer on the
 * started `media`'s port, the gateway's 200 (10 s at most), ACK; then `media` sends its tone to the
 * answered address. For tests where the call crosses a real SIP server (drachtio) or a second leg.
 */
export async function carrierCall(
  carrier: RawSipPeer,
  media: RtpToneEndpoint,
  gwPort: number,
  to = '0700000001',
): Promise<CarrierCall> {
  const callId = newId();
  const fromTag = newId();
  const head = (method: string, cseq: number, toTag?: string) => [
    `${method} sip:${to}@127.0.0.1:${gwPort} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${carrier.port};branch=z9hG4bK${newId()};rport`,
    `From: <sip:0788123456@127.0.0.1>;tag=${fromTag}`,
    `To: <sip:${to}@127.0.0.1>${toTag ? `;tag=${toTag}` : ''}`,
    `Call-ID: ${callId}`,
    `CSeq: ${cseq} ${method}`,
    `Contact: <sip:carrier@127.0.0.1:${carrier.port}>`,
    'Max-Forwards: 70',
  ];
  const sdp = [
    'v=0',
    'o=carrier 1 1 IN IP4 127.0.0.1',
    's=-',
    'c=IN IP4 127.0.0.1',
    't=0 0',
    `m=audio ${media.port} RTP/AVP 0 101`,
    'a=rtpmap:0 PCMU/8000',
    'a=rtpmap:101 telephone-event/8000',
    'a=ptime:20',
    'a=sendrecv',
    '',
  ].join('\r\n');
  const invite = [...head('INVITE', 1), 'Content-Type: application/sdp', `Content-Length: ${sdp.length}`, '', sdp];
  carrier.send(invite.join('\r\n'), gwPort);
  const isOk = (m: SipMessage) => m.kind === 'response' && m.status === 200 && m.headers.get('call-id') === callId;
  const ok = (await carrier.waitFor(isOk, 10_000, `200 OK for ${to}`)) as SipResponse;
  const toTag = tagOf(ok.headers.get('to'))!;
  const send = (method: string, cseq: number) =>
    carrier.send([...head(method, cseq, toTag), 'Content-Length: 0', '', ''].join('\r\n'), gwPort);
  send('ACK', 1);
  const answer = readOffer(ok.body, ['PCMU'], true);
  if (!answer.ok) throw new Error(answer.reason);
  media.setRemote(answer.offer.address, answer.offer.port, 'PCMU', answer.offer.payloadType);
  media.startSending();
  return { callId, toTag, ok, send };
}
