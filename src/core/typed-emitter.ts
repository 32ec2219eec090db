import { EventEmitter } from 'node:events';

/**
 * EventEmitter with the event map checked by the compiler, so the seams between fronts,
 * core and AI backends cannot drift apart silently.
 */
export type EventMap = Record<string, unknown[]>;

export class TypedEmitter<E extends EventMap> {
  private readonly emitter = new EventEmitter();

  on<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.emitter.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.emitter.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof E & string>(event: K, listener: (...args: E[K]) => void): this {
    this.emitter.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  protected emit<K extends keyof E & string>(event: K, ...args: E[K]): boolean {
    return this.emitter.emit(event, ...args);
  }

  removeAllListeners(): void {
    this.emitter.removeAllListeners();
  }

  /** Raises Node's leak warning threshold (10) where many listeners are expected and bounded. */
  setMaxListeners(n: number): this {
    this.emitter.setMaxListeners(n);
    return this;
  }

  listenerCount<K extends keyof E & string>(event: K): number {
    return this.emitter.listenerCount(event);
  }
}
