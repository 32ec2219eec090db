import { describe, expect, it } from 'vitest';
import { GatewayError } from '../../src/core/errors.js';
import { describeSdp, inspectRemoteSdp, shapeLocalSdp } from '../../src/webrtc/sdp.js';
import { metaSdpProblems as sdpProblems } from '../peers/whatsapp/meta-sdp.js';

/** An answer as a less careful stack might write it: extra codecs, extra fingerprints, placeholder c=. */
const messy = [
  'v=0',
  'o=- 1 0 IN IP4 0.0.0.0',
  's=-',
  't=0 0',
  'a=group:BUNDLE 0',
  'a=fingerprint:sha-1 AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD',
  'm=audio 9 UDP/TLS/RTP/SAVPF 111 0 9 126',
  'c=IN IP4 0.0.0.0',
  'a=candidate:1 1 udp 2116026367 203.0.113.7 30010 typ host generation 0',
  'a=candidate:2 1 tcp 1518280447 203.0.113.7 9 typ host tcptype active',
  'a=ice-ufrag:abcd',
  'a=ice-pwd:0123456789abcdef01234567',
  'a=fingerprint:sha-256 72:EC:F5:C3:BC:A1:CD:BE:71:6E:14:E6:32:B3:68:1A:C3:F4:9A:7B:26:BC:D6:6F:15:0B:81:78:C5:35:AB:8B',
  'a=setup:active',
  'a=mid:0',
  'a=sendrecv',
  'a=rtcp-mux',
  'a=rtpmap:111 opus/48000/2',
  'a=fmtp:111 minptime=20;useinbandfec=1',
  'a=rtpmap:0 PCMU/8000',
  'a=rtpmap:9 G722/8000',
  'a=rtcp-fb:0 nack',
  'a=rtpmap:126 telephone-event/8000',
  '',
].join('\r\n');

describe('WhatsApp SDP rules', () => {
  it('keeps only Opus + telephone-event, one sha-256 fingerprint, UDP candidates, and a real default address', () => {
    const shaped = shapeLocalSdp(messy);
    const d = describeSdp(shaped);
    expect(d.codecs).toEqual(['opus/48000/2', 'telephone-event/8000']);
    expect(d.fingerprints).toEqual(['sha-256']);
    expect(d.candidates).toEqual([{ ip: '203.0.113.7', port: 30010, type: 'host' }]);
    expect(shaped).toMatch(/^m=audio 30010 UDP\/TLS\/RTP\/SAVPF 111 126\r$/m);
    expect(shaped).toMatch(/^c=IN IP4 203\.0\.113\.7\r$/m);
    expect(shaped).not.toMatch(/rtcp-fb:0|PCMU|G722|sha-1/);
    expect(sdpProblems(shaped, 'answer')).toEqual([]);
    expect(sdpProblems(messy, 'answer').length).toBeGreaterThan(0);
  });

  it('refuses to produce an SDP WhatsApp would drop: no candidates, no sha-256, no Opus', () => {
    expect(() => shapeLocalSdp(messy.replace(/a=candidate:1 .*\r\n/, ''))).toThrow(/no UDP ICE candidate/);
    expect(() => shapeLocalSdp(messy.replace(/a=fingerprint:sha-256 .*\r\n/, ''))).toThrow(/sha-256/);
    expect(() => shapeLocalSdp(messy.replace('a=rtpmap:111 opus/48000/2', 'a=rtpmap:111 iLBC/8000'))).toThrow(
      GatewayError,
    );
  });

  it('reads the payload types WhatsApp offered and rejects offers without Opus/48000', () => {
    const offer = messy.replace('a=setup:active', 'a=setup:actpass').replace(/111/g, '109');
    expect(inspectRemoteSdp(offer)).toMatchObject({
      opusPt: 109,
      telephoneEventPt: 126,
      telephoneEventRate: 8000,
      setup: 'actpass',
      candidates: 2,
    });
    expect(() => inspectRemoteSdp(offer.replace('opus/48000/2', 'opus/16000'), 'c1')).toThrow(/no Opus\/48000/);
    expect(() => inspectRemoteSdp('v=0\r\ns=-\r\n')).toThrow(/no audio/);
  });

  it('takes telephone-event at the Opus clock when offered beside /8000 (as libwebrtc does), else /8000', () => {
    const both = messy
      .replace(/^(m=audio .*)$/m, '$1 110')
      .replace(
        'a=rtpmap:126 telephone-event/8000',
        'a=rtpmap:126 telephone-event/8000\r\na=rtpmap:110 telephone-event/48000',
      );
    expect(inspectRemoteSdp(both)).toMatchObject({ telephoneEventPt: 110, telephoneEventRate: 48000 });
    const none = messy.replace(/a=rtpmap:126 telephone-event\/8000\r\n/, '');
    expect(inspectRemoteSdp(none)).toMatchObject({ telephoneEventPt: undefined, telephoneEventRate: undefined });
  });
});
