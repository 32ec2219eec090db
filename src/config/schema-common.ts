import { z } from 'zod';

// Field types shared by the config's parts (trunks, routes, the top-level schema).
/** IPv4/IPv6 address or CIDR; validated structurally here, parsed by the SIP front. */
export const cidr = z.string().regex(/^[0-9a-fA-F:.]+(\/\d{1,3})?$/, 'an IP address or CIDR like 196.12.0.0/16');

/** An optional secret: `${VAR:-}` with VAR unset yields "", which means "not configured". */
export const optionalSecret = (min: number, what: string) =>
  z.preprocess((v) => (v === '' ? undefined : v), z.string().min(min, what).optional());

export const codecName = z.enum(['PCMA', 'PCMU']);

/** A value written into a SIP header as a user part / token: no spaces, quotes, separators or controls. */
export const headerToken = z
  .string()
  .min(1)
  .max(128)
  .regex(/^[A-Za-z0-9\-_.!~*'()&=+$,%#]+$/, "a SIP user part (letters, digits, -_.!~*'()&=+$,%#; no spaces or quotes)");
