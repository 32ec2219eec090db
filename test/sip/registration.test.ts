import { afterEach, describe, expect, it, vi } from 'vitest';
import { testLogger } from '../../src/core/logger.js';
import { SipHeaders, type SipRequest, type SipResponse } from '../../src/sip/message.js';
import {
  grantedExpiry,
  TrunkRegistration,
  type RegistrarLink,
  type RegistrationConfig,
  type RegistrationState,
} from '../../src/sip/registration.js';
import type { SipTarget } from '../../src/sip/srv.js';

/** A scripted registrar: each REGISTER is answered by `answer` (or left unanswered when it throws). */
function fakeLink(
  answer: (req: SipRequest, n: number, target: SipTarget) => Partial<SipResponse> & { status: number },
) {
  const sent: { req: SipRequest; target: SipTarget; at: number }[] = [];
  const raw: Buffer[] = [];
  let flowClose: (() => void) | undefined;
  let advertised = { address: '10.0.0.5', port: 5060 };
  const link: RegistrarLink & { fixed: boolean } = {
    fixed: false,
    request: (req, target) => {
      sent.push({ req, target, at: Date.now() });
      try {
        const r = answer(req, sent.length, target);
        const headers = r.headers ?? new SipHeaders();
        if (!headers.has('via')) headers.add('via', 'SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport=5060');
        return Promise.resolve({ kind: 'response', reason: '', body: '', ...r, headers });
      } catch (err) {
        return Promise.reject(err as Error);
      }
    },
    resolve: (_uri, transport) =>
      Promise.resolve([
        { address: '192.0.2.1', port: 5060, transport },
        { address: '192.0.2.2', port: 5060, transport },
      ]),
    holdFlow: (_t, onClose) => {
      flowClose = onClose;
      return Promise.resolve({ release: () => (flowClose = undefined) });
    },
    sendRaw: (buf) => void raw.push(buf),
    advertised: () => advertised,
    get publicAddressFixed() {
      return link.fixed;
    },
    learnPublicAddress: (address, port) => (advertised = { address, port }),
    userAgent: 'test',
  };
  return { link, sent, raw, dropFlow: () => flowClose?.() };
}

const cfg = (over: Partial<RegistrationConfig> = {}): RegistrationConfig => ({
  trunk: 't',
  registrar: 'sip:reg.example',
  username: 'gw',
  password: 'pw',
  expiresSec: 600,
  transport: 'udp',
  keepAliveSec: 0,
  udpKeepAlive: 'crlf',
  retryMinSec: 1,
  retryMaxSec: 8,
  ...over,
});

const ok = (req: SipRequest, expires = 600): { status: number; headers: SipHeaders } => {
  const h = new SipHeaders();
  h.add('via', 'SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;rport=5060');
  for (const c of req.headers.getAll('contact')) if (!/expires=0/.test(c)) h.add('contact', `${c};expires=${expires}`);
  return { status: 200, headers: h };
};

afterEach(() => vi.useRealTimers());

describe('TrunkRegistration (scripted registrar)', () => {
  it('backs off exponentially with jitter up to the cap, and logs one state change, not one per attempt', async () => {
    vi.useFakeTimers();
    const { link, sent } = fakeLink(() => ({ status: 403, reason: 'Forbidden' }));
    const states: RegistrationState[] = [];
    const r = new TrunkRegistration(cfg(), link, testLogger(), { onStateChange: (s) => states.push(s.state) }, () => 1);
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    const times: number[] = [];
    for (let i = 0; i < 6; i++) {
      const before = sent.length;
      const t0 = Date.now();
      while (sent.length === before) await vi.advanceTimersByTimeAsync(100);
      times.push(Math.round((Date.now() - t0) / 1000));
    }
    expect(times).toEqual([1, 2, 4, 8, 8, 8]); // random() = 1: the full delay, capped at retryMaxSec
    expect(r.snapshot()).toMatchObject({ state: 'failing', lastStatus: 403, failures: 7 });
    expect(states).toEqual(['registering', 'failing']);
    await r.stop();
  });

  it('honours Retry-After on 503 after trying the other target', async () => {
    vi.useFakeTimers();
    const { link, sent } = fakeLink(() => {
      const h = new SipHeaders();
      h.add('retry-after', '30');
      return { status: 503, headers: h };
    });
    const r = new TrunkRegistration(cfg(), link, testLogger(), {}, () => 0);
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent.map((s) => s.target.address)).toEqual(['192.0.2.1', '192.0.2.2']); // failover (RFC 3263 §4.3)
    await vi.advanceTimersByTimeAsync(29_000);
    expect(sent).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(1_500);
    expect(sent).toHaveLength(4);
    await r.stop();
  });

  it('refreshes before the granted expiry, learns its public address from rport/received, and swaps the Contact', async () => {
    vi.useFakeTimers();
    let natted = false;
    const { link, sent } = fakeLink((req) => {
      const r = ok(req, 120);
      if (natted) {
        r.headers.delete('via');
        r.headers.add('via', 'SIP/2.0/UDP 10.0.0.5:5060;branch=z9hG4bKx;received=203.0.113.9;rport=40001');
      }
      return r;
    });
    const r = new TrunkRegistration(cfg(), link, testLogger());
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(r.snapshot()).toMatchObject({ state: 'registered', grantedExpiresSec: 120 });
    natted = true;
    await vi.advanceTimersByTimeAsync(59_000);
    expect(sent).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(1_100); // refresh at 60 s of 120
    // The refresh's 200 shows a NAT: re-REGISTER at once with the new Contact, the old one removed.
    expect(sent).toHaveLength(3);
    expect(sent[2]!.req.headers.getAll('contact')).toEqual([
      '<sip:gw@203.0.113.9:40001>',
      '<sip:gw@10.0.0.5:5060>;expires=0',
    ]);
    expect(r.snapshot().contact).toBe('sip:gw@203.0.113.9:40001');
    await r.stop();
    expect(sent.at(-1)!.req.headers.get('expires')).toBe('0');
    expect(sent.at(-1)!.req.headers.getAll('contact')).toEqual(['<sip:gw@203.0.113.9:40001>;expires=0']);
  });

  it('re-registers when the TCP flow drops, and sends CRLF keep-alives over it', async () => {
    vi.useFakeTimers();
    const { link, sent, raw, dropFlow } = fakeLink((req) => ok(req));
    const r = new TrunkRegistration(cfg({ transport: 'tcp', keepAliveSec: 10 }), link, testLogger());
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(1);
    expect(sent[0]!.req.headers.get('contact')).toBe('<sip:gw@10.0.0.5:5060;transport=tcp>');
    await vi.advanceTimersByTimeAsync(10_000);
    expect(raw.map((b) => b.toString())).toEqual(['\r\n\r\n']);
    dropFlow();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent).toHaveLength(2);
    expect(r.snapshot().state).toBe('registered');
    await r.stop();
  });

  it('answers the digest challenge once, reuses the nonce on refresh with nc=2, and stops on a second refusal', async () => {
    vi.useFakeTimers();
    const challenge = new SipHeaders().add('www-authenticate', 'Digest realm="c", nonce="n1", qop="auth"');
    const { link, sent } = fakeLink((req, n) => (n === 1 ? { status: 401, headers: challenge } : ok(req, 100)));
    const r = new TrunkRegistration(cfg(), link, testLogger());
    r.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(sent[1]!.req.headers.get('authorization')).toMatch(/nc=00000001/);
    expect(sent[1]!.req.headers.get('call-id')).toBe(sent[0]!.req.headers.get('call-id'));
    await vi.advanceTimersByTimeAsync(50_100);
    expect(sent[2]!.req.headers.get('authorization')).toMatch(/nonce="n1".*nc=00000002/);
    await r.stop();

    const refuse = fakeLink(() => ({ status: 401, headers: challenge }));
    const r2 = new TrunkRegistration(cfg(), refuse.link, testLogger());
    r2.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(refuse.sent).toHaveLength(2); // one retry per challenge, then back off
    expect(r2.snapshot()).toMatchObject({ state: 'failing', lastStatus: 401 });
    await r2.stop();
  });

  it('reads the granted expiry from our Contact, else Expires, else what we asked', () => {
    const res = (headers: [string, string][]): SipResponse => {
      const h = new SipHeaders();
      for (const [n, v] of headers) h.add(n, v);
      return { kind: 'response', status: 200, reason: 'OK', headers: h, body: '' };
    };
    const mine = 'sip:gw@10.0.0.5:5060';
    expect(
      grantedExpiry(res([['contact', '<sip:other@1.2.3.4>;expires=9, <sip:gw@10.0.0.5:5060>;expires=45']]), mine, 600),
    ).toBe(45);
    expect(grantedExpiry(res([['expires', '90']]), mine, 600)).toBe(90);
    expect(grantedExpiry(res([]), mine, 600)).toBe(600);
    expect(
      grantedExpiry(
        res([
          ['contact', '<sip:gw@10.0.0.5:5060>;expires=abc'],
          ['expires', '30'],
        ]),
        mine,
        600,
      ),
    ).toBe(30);
  });

  it('refuses config values that would break a header', () => {
    const { link } = fakeLink(() => ({ status: 200 }));
    expect(() => new TrunkRegistration(cfg({ username: 'a\r\nVia: x' }), link, testLogger())).toThrow(/username/);
    expect(() => new TrunkRegistration(cfg({ contactUser: 'a b' }), link, testLogger())).toThrow(/contactUser/);
  });
});
