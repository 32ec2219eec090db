import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freeSipPort } from '../../support/free-ports.js';

/**
 * Debian's kamailio as the carrier's registrar for tests: config from test/kamailio/registrar.cfg,
 * a db_text subscriber table, free ports, run in the foreground and stopped by pid. `bindings()`
 * reads the location table over the ctl socket (kamcmd ul.dump).
 */
export interface KamailioOptions {
  realm: string;
  /** Subscribers: user → password. */
  subscribers: Record<string, string>;
  /** The subscriber whose INVITEs are authenticated and relayed to phonePort. */
  dialUser: string;
  phonePort: number;
  minExpires: number;
  maxExpires: number;
  /** Reuse a port (restart on the same address). */
  port?: number;
}

const MODULE_DIRS = ['/usr/lib/x86_64-linux-gnu/kamailio/modules/', '/usr/lib/kamailio/modules/'];

export class Kamailio {
  readonly dir = mkdtempSync(join(tmpdir(), 'kamailio-'));
  port = 0;
  private child: ChildProcess | undefined;
  stderr = '';

  constructor(private readonly opts: KamailioOptions) {}

  static available(): boolean {
    return spawnSync('kamailio', ['-v']).status === 0 && MODULE_DIRS.some((d) => existsSync(d));
  }

  async start(): Promise<void> {
    this.port ||= this.opts.port ?? (await freeSipPort());
    const o = this.opts;
    const modules = MODULE_DIRS.find((d) => existsSync(d))!;
    const db = join(this.dir, 'db');
    mkdirSync(db, { recursive: true });
    writeFileSync(join(db, 'version'), 'id(int,auto) table_name(string) table_version(int)\n0:subscriber:7\n');
    const rows = Object.entries(o.subscribers).map(([u, p]) => `${u}:${o.realm}:${p}:::`);
    writeFileSync(
      join(db, 'subscriber'),
      `id(int,auto) username(string) domain(string) password(string) ha1(string,null) ha1b(string,null)\n${rows
        .map((r, i) => `${i + 1}:${r}`)
        .join('\n')}\n`,
    );
    let cfg = readFileSync(join(import.meta.dirname, '../../kamailio/registrar.cfg'), 'utf8');
    const vars: Record<string, string | number> = {
      PORT: this.port,
      REALM: o.realm,
      MODULES: modules,
      DIR: this.dir,
      MIN_EXPIRES: o.minExpires,
      MAX_EXPIRES: o.maxExpires,
      USER: o.dialUser,
      PHONE_PORT: o.phonePort,
    };
    for (const [k, v] of Object.entries(vars)) cfg = cfg.replaceAll(`@@${k}@@`, String(v));
    const cfgPath = join(this.dir, 'kamailio.cfg');
    writeFileSync(cfgPath, cfg);
    rmSync(join(this.dir, 'kamailio_ctl'), { force: true });
    this.stderr = '';
    // Its own process group: kamailio forks workers, and stopping must take them all (by group id).
    const child = spawn('kamailio', ['-f', cfgPath, '-DD', '-E', '-m', '32', '-M', '8', '-Y', this.dir], {
      stdio: ['ignore', 'ignore', 'pipe'],
      detached: true,
    });
    this.child = child;
    child.stderr!.on('data', (d: Buffer) => {
      this.stderr = (this.stderr + d.toString()).slice(-20_000);
    });
    const deadline = Date.now() + 15_000;
    while (Date.now() < deadline) {
      if (child.exitCode !== null) throw new Error(`kamailio exited: ${this.stderr.slice(-2000)}`);
      if (existsSync(join(this.dir, 'kamailio_ctl')) && this.rpc('core.uptime').ok) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`kamailio did not come up: ${this.stderr.slice(-2000)}`);
  }

  rpc(...args: string[]): { ok: boolean; out: string } {
    const r = spawnSync('kamcmd', ['-s', `unix:${join(this.dir, 'kamailio_ctl')}`, ...args], {
      encoding: 'utf8',
      timeout: 5000,
    });
    return { ok: r.status === 0, out: `${r.stdout ?? ''}${r.stderr ?? ''}` };
  }

  /** Registered contacts of `user` (from the in-memory location table). */
  bindings(user: string): string[] {
    const r = this.rpc('ul.lookup', 'location', user);
    if (!r.ok) return [];
    return [...r.out.matchAll(/Address:\s*(\S+)/g)].map((m) => m[1]!);
  }

  /** Every AoR in the location table. */
  aors(): string[] {
    const r = this.rpc('ul.dump');
    return r.ok ? [...r.out.matchAll(/AoR:\s*(\S+)/gi)].map((m) => m[1]!) : [];
  }

  /** Signal its process group (main process and workers), SIGKILL if it lingers; resolves when gone. */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.child;
    this.child = undefined;
    if (!child?.pid || child.exitCode !== null) return;
    const pgid = child.pid;
    const kill = (sig: NodeJS.Signals) => {
      try {
        process.kill(-pgid, sig);
      } catch {
        // already gone
      }
    };
    const gone = new Promise<void>((r) => child.once('exit', () => r()));
    kill(signal);
    const t = setTimeout(() => kill('SIGKILL'), 5000);
    await gone;
    clearTimeout(t);
    // Workers may outlive the main process by a moment: make sure the group is gone before a restart.
    kill('SIGKILL');
    await new Promise((r) => setTimeout(r, 200));
  }

  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}
