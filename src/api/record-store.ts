import type { CallView } from './call-view.js';
import type { RecordQuery } from './records.js';

/**
 * Where ended calls' records go and where the history is read from: the instance's own SQLite file
 * (single process, the default) or PostgreSQL shared by every instance (`records.postgres.url`).
 * Writes never block a call: `append` queues; the store writes in batches off the media path,
 * retries through outages, counts what it finally loses, and never writes a record twice.
 */
export interface RecordStore {
  append(view: CallView): void;
  get(id: string): CallView | undefined | Promise<CallView | undefined>;
  list(q?: RecordQuery): CallView[] | Promise<CallView[]>;
  /** Records queued and not yet written. */
  readonly pending: number;
  /** Flush what is queued (bounded), then release the store; what cannot be written is counted lost. */
  close(): void | Promise<void>;
}
