import { closeSync, mkdirSync, openSync, readFileSync, rmSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/**
 * Port ranges for the gateway's RTP/WebRTC sockets, which take a range rather than port 0. A
 * random base can collide with another test file, worker or checkout running tests at the same
 * time (EADDRINUSE). Instead each range is leased: a lock file created with O_EXCL in a directory
 * shared by every test process on the machine, holding the owner's pid. A lease whose owner has
 * died is taken over. Ranges lie below the kernel's ephemeral range (32768+), so port-0 sockets
 * never land in them.
 */
const DIR = join(tmpdir(), 'gw-test-port-leases');
const FIRST = 12_000;
const LAST = 32_000;
/** Lease files this process holds, by range start. */
const held = new Map<number, string[]>();
/** Leases are whole blocks of this many ports (lock file per block). */
const UNIT = 100;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
};

function tryLease(file: string): boolean {
  try {
    const fd = openSync(file, 'wx');
    writeSync(fd, String(process.pid));
    closeSync(fd);
    return true;
  } catch {
    let owner = 0;
    try {
      owner = Number(readFileSync(file, 'utf8'));
    } catch {
      return false; // released meanwhile: try it on the next round
    }
    // An empty file is a lease being written right now: never take it over.
    if (!owner || alive(owner)) return false;
    rmSync(file, { force: true }); // its process is gone: the range is free again
    return false;
  }
}

/** A range of `size` ports (rounded up to 100s) no other test process holds, until released or exit. */
export function leasePortRange(size = 100): [number, number] {
  mkdirSync(DIR, { recursive: true });
  const units = Math.ceil(size / UNIT);
  const slots = Math.floor((LAST - FIRST) / UNIT) - units + 1;
  const start = (process.pid * 7) % slots; // spread processes out; the lease files decide
  for (let round = 0; round < 2; round++) {
    for (let k = 0; k < slots; k++) {
      const base = FIRST + ((start + k) % slots) * UNIT;
      const taken: string[] = [];
      for (let u = 0; u < units; u++) {
        const file = join(DIR, String(base + u * UNIT));
        if ([...held.values()].some((f) => f.includes(file)) || !tryLease(file)) break;
        taken.push(file);
      }
      if (taken.length === units) {
        held.set(base, taken);
        return [base, base + units * UNIT - 1];
      }
      for (const f of taken) rmSync(f, { force: true });
    }
  }
  throw new Error(`no free test port range of ${size} in ${FIRST}-${LAST}`);
}

/** Give a leased range back (a harness's stop); leases also end with the process. */
export function releasePortRange([min]: [number, number]): void {
  for (const f of held.get(min) ?? []) rmSync(f, { force: true });
  held.delete(min);
}

process.once('exit', () => {
  for (const files of held.values()) for (const f of files) rmSync(f, { force: true });
});
