/**
 * What gateways behind one load balancer must agree on (issue 14): who owns each live call, how many
 * calls each trunk / front carries across all of them (`maxCalls` is the cluster's limit), which
 * webhook deliveries were already acted on, and which instances are up or draining. The core depends
 * on this port only; the in-process implementation below is the single-process default (nothing else
 * to run), src/cluster/redis-state.ts is the shared one.
 */

/** One concurrency cap a new call takes a slot in (e.g. `trunk:mtn-rwanda` max 60). */
export interface Slot {
  key: string;
  max: number;
}

/** What is known about a live call cluster-wide. */
export interface CallOwner {
  callId: string;
  instanceId: string;
}

/** A gateway instance as the others see it. */
export interface InstanceInfo {
  id: string;
  /** Base URL of its ops listener (cluster REST forwarding, webhook forwarding), if it has one. */
  url: string | undefined;
  draining: boolean;
  /** Live calls it owns (as of its last heartbeat). */
  calls: number;
}

/** Kinds of external ids a call is also known by (WhatsApp call id, SIP Call-ID, OpenAI call). */
export type AliasKind = 'whatsapp' | 'sip' | 'openai';

export interface ClusterState {
  readonly instanceId: string;
  /** True when state is shared with other instances (so misses must be looked up, not assumed). */
  readonly shared: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
  /**
   * Admission: takes one slot in every counter for `callId` if every one is below its max, all or
   * nothing. Resolves to the key that is full, or undefined when admitted. The call becomes owned by
   * this instance.
   */
  admit(callId: string, slots: Slot[]): Promise<string | undefined>;
  /** The call ended here: free its slots, ownership and aliases. Idempotent. */
  release(callId: string): Promise<void>;
  /** Also known as: lets another instance find the owner from a webhook's id. */
  alias(kind: AliasKind, externalId: string, callId: string): Promise<void>;
  /** The call an external id names, and its owner; undefined when unknown or expired. */
  resolve(kind: AliasKind, externalId: string): Promise<CallOwner | undefined>;
  ownerOf(callId: string): Promise<CallOwner | undefined>;
  /** Calls currently holding a slot in `key`, cluster-wide. */
  count(key: string): Promise<number>;
  /** True exactly once per key within ttlMs, cluster-wide (webhook de-duplication). */
  claim(key: string, ttlMs: number): Promise<boolean>;
  setDraining(draining: boolean): Promise<void>;
  /** Live instances (this one included). */
  instances(): Promise<InstanceInfo[]>;
}

/** Counter keys, in one place so every front and view names them alike. */
export const slotKeys = {
  trunk: (name: string) => `trunk:${name}`,
  front: (name: string) => `front:${name}`,
};

/**
 * The single-process ClusterState: plain maps. The process is the cluster, so nothing expires on its
 * own (a call always releases when it ends; a dead process takes its state with it).
 */
export class InProcessClusterState implements ClusterState {
  readonly shared = false;
  private readonly counters = new Map<string, Set<string>>();
  private readonly slotsOf = new Map<string, string[]>();
  private readonly aliases = new Map<string, string>();
  private readonly aliasesOf = new Map<string, string[]>();
  private readonly once = new Map<string, number>();
  private draining = false;

  constructor(
    readonly instanceId: string,
    private readonly url?: string,
    private readonly maxOnceKeys = 100_000,
  ) {}

  start(): Promise<void> {
    return Promise.resolve();
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  admit(callId: string, slots: Slot[]): Promise<string | undefined> {
    const full = slots.find((s) => (this.counters.get(s.key)?.size ?? 0) >= s.max);
    if (full) return Promise.resolve(full.key);
    for (const s of slots) {
      let set = this.counters.get(s.key);
      if (!set) this.counters.set(s.key, (set = new Set()));
      set.add(callId);
    }
    this.slotsOf.set(callId, [...(this.slotsOf.get(callId) ?? []), ...slots.map((s) => s.key)]);
    return Promise.resolve(undefined);
  }

  release(callId: string): Promise<void> {
    for (const key of this.slotsOf.get(callId) ?? []) {
      const set = this.counters.get(key);
      set?.delete(callId);
      if (set?.size === 0) this.counters.delete(key);
    }
    this.slotsOf.delete(callId);
    for (const a of this.aliasesOf.get(callId) ?? []) if (this.aliases.get(a) === callId) this.aliases.delete(a);
    this.aliasesOf.delete(callId);
    return Promise.resolve();
  }

  alias(kind: AliasKind, externalId: string, callId: string): Promise<void> {
    const key = `${kind}:${externalId}`;
    this.aliases.set(key, callId);
    this.aliasesOf.set(callId, [...(this.aliasesOf.get(callId) ?? []), key]);
    return Promise.resolve();
  }

  resolve(kind: AliasKind, externalId: string): Promise<CallOwner | undefined> {
    const callId = this.aliases.get(`${kind}:${externalId}`);
    return Promise.resolve(callId ? { callId, instanceId: this.instanceId } : undefined);
  }

  ownerOf(callId: string): Promise<CallOwner | undefined> {
    return Promise.resolve(this.slotsOf.has(callId) ? { callId, instanceId: this.instanceId } : undefined);
  }

  count(key: string): Promise<number> {
    return Promise.resolve(this.counters.get(key)?.size ?? 0);
  }

  claim(key: string, ttlMs: number): Promise<boolean> {
    const now = Date.now();
    // Insertion order is claim order; entries share few TTLs, so expired ones sit at the front.
    for (const [k, until] of this.once) {
      if (until > now && this.once.size <= this.maxOnceKeys) break;
      this.once.delete(k);
    }
    const until = this.once.get(key);
    if (until !== undefined && until > now) return Promise.resolve(false);
    this.once.delete(key);
    this.once.set(key, now + ttlMs);
    return Promise.resolve(true);
  }

  setDraining(draining: boolean): Promise<void> {
    this.draining = draining;
    return Promise.resolve();
  }

  instances(): Promise<InstanceInfo[]> {
    return Promise.resolve([{ id: this.instanceId, url: this.url, draining: this.draining, calls: this.slotsOf.size }]);
  }
}

export type Admission = { ok: true } | { ok: false; full: string } | { ok: false; unavailable: string };

/**
 * A front's admission of a new call: a full cap and an unreachable shared store are both refusals
 * (503 / Graph reject), told apart for the log. Never throws.
 */
export async function admitCall(state: ClusterState, callId: string, slots: Slot[]): Promise<Admission> {
  try {
    const full = await state.admit(callId, slots);
    return full === undefined ? { ok: true } : { ok: false, full };
  } catch (err) {
    return { ok: false, unavailable: (err as Error).message };
  }
}

/** A reply from another instance, relayed as is. */
export interface PeerReply {
  status: number;
  body: unknown;
}

/**
 * How one instance asks another to act on a call it owns (webhook events, API requests). Lives
 * beside ClusterState: the fronts and the API depend on this port, src/cluster implements it.
 */
export interface PeerLink {
  /** Sends to `instanceId`'s internal endpoint; rejects on timeout, unknown instance or network error. */
  send(instanceId: string, method: string, path: string, body?: unknown): Promise<PeerReply>;
}

/** The single-process link: there is nobody to forward to. */
export const noPeers: PeerLink = {
  send: (instanceId) => Promise.reject(new Error(`no cluster: instance ${instanceId} is not reachable`)),
};

/** Call events the live event stream (GET /v1/events) shows, as relayed between instances. */
export type RelayedEventName = 'call' | 'ended' | 'transcript';

export interface RelayedEvent {
  /** The instance that owns the call (and alone publishes its events). */
  origin: string;
  event: RelayedEventName;
  data: unknown;
}

/**
 * Every instance's call events reaching every other instance's event streams. Each instance
 * publishes only its own calls' events and is never handed its own back, so a stream sees each
 * event once: local ones from the registry, the others' from here. Best effort, like any live feed
 * (a reconnecting client gets a fresh snapshot).
 */
export interface EventRelay {
  start(): Promise<void>;
  stop(): Promise<void>;
  publish(event: RelayedEventName, data: unknown): void;
  /** Other instances' events, until the returned function is called. */
  subscribe(fn: (ev: RelayedEvent) => void): () => void;
}

/** The single-process relay: there is nobody to tell, and nobody tells us. */
export const noRelay: EventRelay = {
  start: () => Promise.resolve(),
  stop: () => Promise.resolve(),
  publish: () => {},
  subscribe: () => () => {},
};
