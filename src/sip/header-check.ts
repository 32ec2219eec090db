import { GatewayError } from '../core/errors.js';

/**
 * Minimal check for values we write into SIP headers from config or from the far end (digest
 * parameters, From user, identity headers): no CR/LF/NUL (header injection), no other control
 * characters, bounded length. A shared validator (src/sip/header-values.ts) is being added by
 * another change; this local one keeps the registration code safe until both meet.
 */
export function headerValueProblem(value: string, extra?: RegExp): string | undefined {
  if (value.length > 512) return 'longer than 512 characters';
  // eslint-disable-next-line no-control-regex
  if (/[\x00-\x1f\x7f]/.test(value)) return 'contains a control character (CR, LF, NUL, ...)';
  if (extra?.test(value)) return `contains a character not allowed here (${extra.source})`;
  return undefined;
}

export function assertHeaderValue(value: string, what: string, extra?: RegExp): void {
  const problem = headerValueProblem(value, extra);
  if (problem) throw new GatewayError('config_invalid', `${what} ${problem}`);
}
