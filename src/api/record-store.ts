import type { CallView } from './call-view.js';

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

export interface RecordQuery {
  front?: string;
  trunk?: string;
  limit?: number;
  /** Part of the calling or called number. */
  number?: string;
  route?: string;
  /** End cause (endReason.cause), e.g. bye, api_hangup. */
  outcome?: string;
  /** Ended at or after / before (epoch ms). */
  since?: number;
  until?: number;
  /** Records to skip (pagination, newest first). */
  offset?: number;
}

/** The same filters as the SQL, for records still queued for writing. */
export function recordMatches(v: CallView, q: RecordQuery): boolean {
  const ended = v.times.ended ?? 0;
  return (
    (!q.front || v.front === q.front) &&
    (!q.trunk || v.trunk === q.trunk) &&
    (!q.number || v.from.includes(q.number) || v.to.includes(q.number)) &&
    (!q.route || v.route === q.route) &&
    (!q.outcome || v.endReason?.cause === q.outcome) &&
    (q.since === undefined || ended >= q.since) &&
    (q.until === undefined || ended < q.until)
  );
}
