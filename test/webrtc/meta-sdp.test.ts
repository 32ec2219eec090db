import { describe, expect, it } from 'vitest';
import { metaSdpProblems } from '../peers/whatsapp/meta-sdp.js';

/** A WhatsApp-shaped offer as Meta's relay sends it (Opus 111, telephone-event 126, actpass). */
const offer = [
  'v=0',
  'o=- 4611731400430051336 2 IN IP4 127.0.0.1',
  's=-',
  't=0 0',
  'a=group:BUNDLE audio',
  'm=audio 3480 UDP/TLS/RTP/SAVPF 111 126',
  'c=IN IP4 157.240.19.130',
  'a=mid:audio',
  'a=ice-ufrag:Gl3E',
  'a=ice-pwd:yR6qL0SW4pR2b9hJkXM7Qx0Z',
  'a=fingerprint:sha-256 72:EC:F5:C3:BC:A1:CD:BE:71:6E:14:E6:32:B3:68:1A:C3:F4:9A:7B:26:BC:D6:6F:15:0B:81:78:C5:35:AB:8B',
  'a=setup:actpass',
  'a=candidate:1 1 udp 2122260223 157.240.19.130 3480 typ host',
  'a=candidate:2 1 udp 1686052607 157.240.19.131 3481 typ srflx raddr 10.0.0.2 rport 3480',
  'a=sendrecv',
  'a=rtcp-mux',
  'a=rtpmap:111 opus/48000/2',
  'a=fmtp:111 minptime=20;useinbandfec=1',
  'a=rtpmap:126 telephone-event/8000',
  '',
].join('\r\n');
const answer = offer.replace('a=setup:actpass', 'a=setup:active');

describe("the Graph stand-in's SDP checks (written from the RFCs and Meta's docs, not from src/webrtc/sdp.ts)", () => {
  it('accepts a well-formed offer and a matching answer', () => {
    expect(metaSdpProblems(offer, 'offer')).toEqual([]);
    expect(metaSdpProblems(answer, 'answer', offer)).toEqual([]);
  });

  it.each([
    ['LF line endings', answer.replace(/\r\n/g, '\n'), /CRLF/],
    [
      'a G.711 codec',
      answer.replace('111 126', '111 0 126').replace('a=rtpmap:126', 'a=rtpmap:0 PCMU/8000\r\na=rtpmap:126'),
      /pcmu\/8000 is not allowed/,
    ],
    ['mono Opus', answer.replace('opus/48000/2', 'opus/48000'), /must be opus\/48000\/2/],
    ['a listed payload without rtpmap', answer.replace('111 126', '111 126 98'), /payload 98 .* no a=rtpmap/],
    ['a sha-1 fingerprint', answer.replace('a=fingerprint:sha-256', 'a=fingerprint:sha-1'), /sha-256 only/],
    ['a truncated fingerprint', answer.replace(/:8B\r\n/, '\r\n'), /not 32 hex bytes/],
    ['no candidates', answer.replace(/a=candidate:.*\r\n/g, ''), /no usable UDP ICE candidate/],
    ['only mDNS candidates', answer.replace(/157\.240\.19\.13[01]/g, 'a1b2.local'), /mDNS/],
    ['srflx without raddr', answer.replace(' raddr 10.0.0.2 rport 3480', ''), /srflx without raddr/],
    ['a short ice-pwd', answer.replace(/a=ice-pwd:.*/, 'a=ice-pwd:short'), /ice-pwd/],
    ['setup actpass in an answer', offer, /a=setup must be active or passive/],
    ['no rtcp-mux', answer.replace('a=rtcp-mux\r\n', ''), /rtcp-mux/],
    ['a video section', answer + 'm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\n', /audio only/],
    ['a rejected stream (port 0)', answer.replace('m=audio 3480', 'm=audio 0'), /port 0/],
    ['recvonly', answer.replace('a=sendrecv', 'a=recvonly'), /direction recvonly/],
    ['a BUNDLE tag without its mid', answer.replace('a=mid:audio', 'a=mid:0'), /BUNDLE names unknown mid audio/],
  ])('finds %s', (_name, sdp, problem) => {
    expect(metaSdpProblems(sdp, 'answer').join('\n')).toMatch(problem);
  });

  it('holds an answer to the offer it answers (RFC 3264): payload numbers, codecs and mid', () => {
    const renumbered = answer.replace(/\b111\b/g, '109');
    expect(metaSdpProblems(renumbered, 'answer', offer).join('\n')).toMatch(/payload 109 .* was not offered/);
    const remapped = answer.replace('a=rtpmap:126 telephone-event/8000', 'a=rtpmap:126 telephone-event/48000');
    expect(metaSdpProblems(remapped, 'answer', offer).join('\n')).toMatch(/maps payload 126 to telephone-event\/48000/);
    const otherMid = answer.replace('a=mid:audio', 'a=mid:0').replace('BUNDLE audio', 'BUNDLE 0');
    expect(metaSdpProblems(otherMid, 'answer', offer).join('\n')).toMatch(/mid 0 does not match the offer's audio/);
  });

  it('never throws on hostile input', () => {
    for (const bad of [undefined, 42, '', 'v=0', 'x'.repeat(100_000), 'v=0\r\no=\r\ns=\r\nm=audio\r\n', '\u0000\r\n'])
      expect(metaSdpProblems(bad, 'answer').length).toBeGreaterThan(0);
  });
});
