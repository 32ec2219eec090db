/**
 * Where a route's calls may be transferred (toll-fraud guard): the operator lists destinations per
 * route as E.164 numbers, E.164 prefixes ending in `*`, or exact sip:/sips:/tel: URIs. Anything
 * the AI asks for outside that list is refused; with an empty list the route has no transfer at all.
 * Entries are validated when the config loads; this class only matches.
 */
export type TransferDecision = { ok: true; destination: string } | { ok: false; reason: string };

const NUMBERISH = /^[+\d \-.()]+$/;

/** The comparable form of a destination: numbers without separators, tel:+X as +X, URIs as given. */
export function canonicalDestination(value: string): string {
  let v = value.trim();
  if (/^tel:/i.test(v)) v = v.slice(4);
  return NUMBERISH.test(v) ? v.replace(/[ \-.()]/g, '') : v;
}

export class TransferPolicy {
  private readonly exact: string[];
  private readonly prefixes: string[];

  /**
   * @param allow the route's `transfer.allow`
   * @param defaultTarget the route's `transferTarget`: allowed too, and used when no destination is named
   */
  constructor(
    allow: readonly string[],
    private readonly defaultTarget?: string,
  ) {
    const all = [...allow, ...(defaultTarget ? [defaultTarget] : [])];
    this.exact = [...new Set(all.filter((a) => !a.endsWith('*')).map(canonicalDestination))];
    this.prefixes = all.filter((a) => a.endsWith('*')).map((a) => a.slice(0, -1));
  }

  /** True when no destination is allowed: the route offers no transfer. */
  get empty(): boolean {
    return this.exact.length === 0 && this.prefixes.length === 0;
  }

  /** Used when the model names no destination: transferTarget, else the only exact entry. */
  get fallback(): string | undefined {
    if (this.defaultTarget) return canonicalDestination(this.defaultTarget);
    return this.exact.length === 1 && this.prefixes.length === 0 ? this.exact[0] : undefined;
  }

  /** Human-readable list, for the tool description the model reads and for refusals. */
  describe(): string {
    return [...this.exact, ...this.prefixes.map((p) => `any number starting ${p}`)].join('; ');
  }

  check(requested: string | undefined): TransferDecision {
    const raw = requested?.trim() ? requested : this.fallback;
    if (!raw) return { ok: false, reason: 'no destination given' };
    const d = canonicalDestination(raw);
    const lower = d.toLowerCase();
    if (this.exact.some((e) => e.toLowerCase() === lower)) return { ok: true, destination: d };
    if (/^\+\d{6,15}$/.test(d) && this.prefixes.some((p) => d.startsWith(p))) return { ok: true, destination: d };
    return {
      ok: false,
      reason: `destination ${JSON.stringify(raw.slice(0, 80))} is not in this route's transfer list`,
    };
  }
}
