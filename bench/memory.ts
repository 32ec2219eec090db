import { GCProfiler, getHeapStatistics, setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

/**
 * Memory figures for the benches (issue 15: memory per call, bytes allocated per call-second,
 * GC pauses, which are what stalls the media clock). The bench process asks V8 for a `gc()` of its
 * own so that steady-state memory is read after a full collection, not at a random point of the
 * young generation's fill.
 */
setFlagsFromString('--expose-gc');
const collect = runInNewContext('gc') as () => void;

export interface SettledMemory {
  rss: number;
  heapUsed: number;
  /** Buffers' backing stores and other memory outside the JS heap. */
  external: number;
}

/** Memory after two full collections (the second frees what the first's finalizers released). */
export function settledMemory(): SettledMemory {
  collect();
  collect();
  const m = process.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, external: m.external };
}

export interface AllocationFigures {
  /** Bytes allocated on the JS heap during the window (Buffer backing stores are not counted). */
  heapBytes: number;
  gcCount: number;
  /** Time spent in GC during the window: every ms of it is a ms the media clock could not tick. */
  gcPauseMs: number;
  gcPauseMaxMs: number;
}

/**
 * Starts counting heap allocation: what the heap grew by between collections, summed (each GC's
 * "used before" minus the previous GC's "used after"), plus the growth since the last one.
 */
export function allocationWindow(): { stop(): AllocationFigures } {
  const profiler = new GCProfiler();
  const startUsed = getHeapStatistics().used_heap_size;
  profiler.start();
  return {
    stop() {
      const endUsed = getHeapStatistics().used_heap_size;
      const { statistics } = profiler.stop();
      let heapBytes = 0;
      let previousAfter = startUsed;
      let gcPauseUs = 0;
      let gcPauseMaxUs = 0;
      for (const gc of statistics) {
        heapBytes += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - previousAfter);
        previousAfter = gc.afterGC.heapStatistics.usedHeapSize;
        gcPauseUs += gc.cost;
        gcPauseMaxUs = Math.max(gcPauseMaxUs, gc.cost);
      }
      heapBytes += Math.max(0, endUsed - previousAfter);
      return { heapBytes, gcCount: statistics.length, gcPauseMs: gcPauseUs / 1000, gcPauseMaxMs: gcPauseMaxUs / 1000 };
    },
  };
}

/** "1.23 MB" / "456 kB" for tables. */
export function bytes(n: number): string {
  const abs = Math.abs(n);
  if (abs >= 1e6) return `${(n / 1e6).toFixed(2)} MB`;
  if (abs >= 1e3) return `${(n / 1e3).toFixed(0)} kB`;
  return `${n.toFixed(0)} B`;
}
