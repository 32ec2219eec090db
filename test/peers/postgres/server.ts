import { spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir, userInfo } from 'node:os';
import { join } from 'node:path';
import { freeTcpPort } from '../../support/free-ports.js';

/**
 * Debian's PostgreSQL in a temp dir (initdb + pg_ctl), on a free loopback port, trust auth. PostgreSQL
 * refuses to run as root: as root (CI), it runs as the `postgres` user the Debian package creates.
 */
export interface PostgresServer {
  url: string;
  port: number;
  /** pg_ctl stop / start on the same data dir and port (a database outage). */
  stop(): void;
  start(): void;
  destroy(): void;
}

function binDir(): string | undefined {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const v = readdirSync(root).sort().reverse()[0];
    if (v && existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin');
  }
  return spawnSync('initdb', ['--version']).status === 0 ? '' : undefined;
}

/** Why it cannot run here, or undefined when it can. */
export function postgresMissing(): string | undefined {
  if (binDir() === undefined) return 'postgresql is not installed (apt-get install postgresql)';
  if (userInfo().uid === 0 && spawnSync('id', ['postgres']).status !== 0)
    return 'running as root with no postgres user';
  return undefined;
}

export async function startPostgres(): Promise<PostgresServer> {
  const bin = binDir()!;
  const tool = (name: string) => (bin ? join(bin, name) : name);
  const asRoot = userInfo().uid === 0;
  const dir = mkdtempSync(join(tmpdir(), 'pg-'));
  if (asRoot) {
    const id = spawnSync('id', ['-u', 'postgres']).stdout.toString().trim();
    const gid = spawnSync('id', ['-g', 'postgres']).stdout.toString().trim();
    chownSync(dir, Number(id), Number(gid));
  }
  const run = (name: string, args: string[]) => {
    const cmd = asRoot ? 'runuser' : tool(name);
    const full = asRoot ? ['-u', 'postgres', '--', tool(name), ...args] : args;
    const r = spawnSync(cmd, full, { encoding: 'utf8', timeout: 60_000 });
    if (r.status !== 0) throw new Error(`${name} failed: ${r.stderr || r.stdout}`);
  };
  const data = join(dir, 'data');
  run('initdb', ['-D', data, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
  const port = await freeTcpPort();
  const opts = `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off`;
  const start = () => run('pg_ctl', ['-D', data, '-o', opts, '-l', join(dir, 'log'), '-w', '-t', '30', 'start']);
  const stop = () => run('pg_ctl', ['-D', data, '-m', 'fast', '-w', 'stop']);
  start();
  return {
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    port,
    start,
    stop,
    destroy() {
      try {
        stop();
      } catch {
        // already stopped
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
