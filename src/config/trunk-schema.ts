import { z } from 'zod';
import { codecName, cidr, headerToken } from './schema-common.js';

/** `trunks[].register`: REGISTER to the carrier (issue 18). Secrets as `${VAR}`. */
export const registerSchema = z.object({
  /** Registrar: `sip:reg.carrier.net`, `sip:reg.carrier.net:5080;transport=tcp`, or host[:port]. */
  registrar: z.string().regex(/^(sips?:)?[^\s@<>"]+$/, 'a SIP URI or host[:port] without user part'),
  /** AoR domain when it differs from the registrar host. */
  domain: z
    .string()
    .regex(/^[A-Za-z0-9.:[\]-]+$/, 'a host name')
    .optional(),
  username: headerToken,
  /** Digest user name when it differs from the AoR user. */
  authUsername: headerToken.optional(),
  password: z.string().min(1, 'a password (use ${VAR})'),
  /** Only answer challenges for this realm (default: whatever realm the registrar names). */
  realm: z
    .string()
    .min(1)
    .regex(/^[^"\\\r\n]+$/, 'a realm without quotes or line breaks')
    .optional(),
  expiresSec: z.number().int().min(1).max(86400).default(600),
  transport: z.enum(['udp', 'tcp', 'tls']).default('udp'),
  /** User part of the Contact we register (default: username). */
  contactUser: headerToken.optional(),
  /** NAT keep-alive interval toward the registrar (0: off). CRLF on TCP/TLS. */
  keepAliveSec: z.number().int().min(0).max(3600).default(25),
  /** UDP keep-alive: a CRLF datagram, or OPTIONS (also notices a dead registrar). */
  udpKeepAlive: z.enum(['crlf', 'options']).default('crlf'),
  /** Backoff after a failed REGISTER: from retryMinSec doubling to retryMaxSec, with jitter. */
  retryMinSec: z.number().min(0.1).default(5),
  retryMaxSec: z.number().min(1).default(300),
  /**
   * With `match: registration|both`: INVITEs matched by registration must come from the registrar's
   * resolved address (safer; off for carriers that deliver from other SBCs).
   */
  requireRegistrarSource: z.boolean().default(false),
});

export const trunkSchema = z.object({
  name: z.string().min(1),
  /**
   * Source addresses allowed to send us INVITEs; anything else gets 403 (unless `match` lets a
   * registration trunk take INVITEs addressed to its registered Contact). Required unless the trunk
   * registers.
   */
  allow: z.array(cidr).default([]),
  auth: z.object({ realm: z.string().min(1), username: z.string().min(1), password: z.string().min(1) }).optional(),
  codecs: z.array(codecName).min(1).default(['PCMA', 'PCMU']),
  telephoneEvent: z.boolean().default(true),
  /** Country calling code used to normalise national numbers to E.164 (250 Rwanda, 356 Malta). */
  countryCode: z.string().regex(/^\d{1,3}$/),
  /** National trunk prefix stripped before adding the country code (0 in Rwanda; none in Malta). */
  nationalPrefix: z.string().regex(/^\d*$/).default(''),
  maxCalls: z.number().int().positive().default(30),
  route: z.string().optional(),
  /**
   * Addresses allowed to send RTP/RTCP for this trunk's calls, besides the address in each call's
   * SDP (RTP from anywhere else is dropped and counted as foreign). Default: `allow`.
   */
  mediaAllow: z.array(cidr).optional(),
  /**
   * Where outbound calls (POST /v1/calls with front sip) go: a SIP URI without user part, e.g.
   * `sip:196.12.0.10:5060;transport=udp`; the called number becomes the user part. Default: the
   * first `allow` address, port 5060, UDP.
   */
  dialUri: z
    .string()
    .regex(/^sips?:[^@\s]+$/, 'a SIP URI without user part, like sip:196.12.0.10:5060;transport=udp')
    .optional(),
  // --- registration trunks and outbound identity (issue 18) ---
  /** Outbound registration to the carrier's registrar (a "credential trunk"). */
  register: registerSchema.optional(),
  /**
   * Which INVITEs belong to this trunk: `ip` (source address in `allow`), `registration` (the
   * Request-URI's user is our registered Contact user or username, from any address — or only from
   * the registrar's addresses with `register.requireRegistrarSource`), `both` (either). Default:
   * `both` when the trunk registers, else `ip`.
   */
  match: z.enum(['ip', 'registration', 'both']).optional(),
  /** Credentials answering 401/407 to our INVITEs when the trunk does not register (else register's are used). */
  outboundAuth: z
    .object({ username: headerToken, password: z.string().min(1), realm: z.string().min(1).optional() })
    .optional(),
  /** From user of our INVITEs (default: the caller number, or register.username on a registration trunk). */
  fromUser: headerToken.optional(),
  /** From host of our INVITEs (default: the registration domain, else our address). */
  fromDomain: z
    .string()
    .regex(/^[A-Za-z0-9.:[\]-]+$/, 'a host name or address')
    .optional(),
  /** Caller-ID presentation on our INVITEs: which identity header carries the calling number. */
  callerIdHeader: z.enum(['none', 'pai', 'ppi', 'rpid']).default('none'),
  /** `id`: withhold the caller ID (Privacy: id, RFC 3325; Remote-Party-ID privacy=full). */
  privacy: z.enum(['none', 'id']).default('none'),
  /** How numbers are written toward the carrier: +E.164, national (nationalPrefix + NSN) or E.164 digits. */
  numberFormat: z.enum(['e164', 'national', 'e164-digits']).default('e164'),
});

export type TrunkConfig = z.infer<typeof trunkSchema>;
export type TrunkRegisterConfig = z.infer<typeof registerSchema>;
