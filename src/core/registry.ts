import { Call, type CallBounds, type CallInfo, type CallState, type Front } from './call.js';
import type { Logger } from './logger.js';
import { TypedEmitter } from './typed-emitter.js';

export interface CallFilter {
  state?: CallState;
  front?: Front;
  trunk?: string;
}

export type RegistryEvents = {
  created: [call: Call];
  ended: [call: Call];
};

/** The one place that lists live calls. Everything that needs "all calls" (API, metrics, shutdown) reads it. */
export class CallRegistry extends TypedEmitter<RegistryEvents> {
  private readonly calls = new Map<string, Call>();

  constructor(
    private readonly log: Logger,
    private readonly bounds?: CallBounds,
  ) {
    super();
  }

  create(info: CallInfo, id?: string): Call {
    const call = new Call(info, this.log, id, this.bounds);
    this.calls.set(call.id, call);
    call.once('ended', () => {
      this.calls.delete(call.id);
      this.emit('ended', call);
    });
    this.emit('created', call);
    return call;
  }

  get(id: string): Call | undefined {
    return this.calls.get(id);
  }

  findByExternalId(externalId: string): Call | undefined {
    for (const c of this.calls.values()) if (c.info.externalId === externalId) return c;
    return undefined;
  }

  list(filter: CallFilter = {}): Call[] {
    return [...this.calls.values()].filter(
      (c) =>
        (!filter.state || c.state === filter.state) &&
        (!filter.front || c.info.front === filter.front) &&
        (!filter.trunk || c.info.trunk === filter.trunk),
    );
  }

  countActive(pred: (c: Call) => boolean = () => true): number {
    let n = 0;
    for (const c of this.calls.values()) if (pred(c)) n++;
    return n;
  }

  get size(): number {
    return this.calls.size;
  }
}
