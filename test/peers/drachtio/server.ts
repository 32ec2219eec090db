import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { freeSipPort } from '../../support/free-ports.js';

/**
 * The real drachtio-server (../shared/drachtio/drachtio, see its README) for tests: a generated
 * config on free ports in a temp dir, started as a child process, stopped by its pid.
 */
export const DRACHTIO_BIN =
  process.env.DRACHTIO_BIN ?? resolve(import.meta.dirname, '../../../../shared/drachtio/drachtio');

export interface DrachtioServer {
  adminPort: number;
  sipPort: number;
  /** TLS listener (when started with tls). */
  tlsPort: number | undefined;
  secret: string;
  pid: number;
  /** Everything it logged so far (SIP traces at sofia-loglevel 9 when asked). */
  output(): string;
  /** Signal the process by pid (SIGKILL: a crash); resolves once it exited. Idempotent. */
  kill(signal?: NodeJS.Signals): Promise<void>;
  /** Start it again on the same ports and config after kill(). */
  relaunch(): Promise<void>;
  /** kill() and remove its temp dir. */
  stop(): Promise<void>;
}

let probed: string | undefined | null = null;

/**
 * Whether this machine can run the binary (right architecture, runtime libraries installed).
 * Returns why not, once printed as one clear console line, so skipped runs are never silent.
 */
export function drachtioUnavailable(): string | undefined {
  if (probed !== null) return probed;
  if (!existsSync(DRACHTIO_BIN)) probed = `no drachtio-server binary at ${DRACHTIO_BIN}`;
  else {
    const r = spawnSync(DRACHTIO_BIN, ['--version'], { encoding: 'utf8', timeout: 10_000 });
    if (r.error) probed = `drachtio-server cannot run: ${r.error.message}`;
    else if (r.status !== 0)
      probed = `drachtio-server cannot run (exit ${r.status}): ${(r.stderr || r.stdout).trim().split('\n')[0]}`;
    else probed = undefined;
  }
  if (probed)
    console.warn(
      `SKIPPING drachtio-server tests: ${probed} (install its runtime packages, see ../shared/drachtio/README.md)`,
    );
  return probed;
}

function portAccepts(port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = connect(port, '127.0.0.1');
    s.once('connect', () => {
      s.destroy();
      res(true);
    });
    s.once('error', () => res(false));
  });
}

const TLS_UNSUPPORTED = /transport=tls\)?: Protocol not supported|Error adding additional transport/;

/** This drachtio-server build has no SIP over TLS (sofia-sip built without OpenSSL). */
export class DrachtioTlsUnsupported extends Error {
  constructor() {
    super('this drachtio-server build cannot open a TLS contact (sofia-sip without TLS): "Protocol not supported"');
  }
}

export interface DrachtioServerOptions {
  /** PEM files: adds a TLS contact on its own free port. */
  tls?: { cert: string; key: string };
  /** sofia-loglevel 9 traces every SIP message in output(). */
  traceSip?: boolean;
  /** Also listen on [::1] (same port) for IPv6 calls. */
  ipv6?: boolean;
}

/** One of its ports was taken between our probe and its bind (another process got it first). */
class PortTaken extends Error {}

/**
 * Starts drachtio-server and resolves once its admin port accepts connections. Its ports are probed
 * free and then bound by the child: another process on a busy box can take one in between, so a
 * start that fails with EADDRINUSE is retried on fresh ports.
 */
export async function startDrachtioServer(opts: DrachtioServerOptions = {}): Promise<DrachtioServer> {
  const why = drachtioUnavailable();
  if (why) throw new Error(why);
  for (let attempt = 1; ; attempt++) {
    try {
      return await startOnce(opts);
    } catch (err) {
      if (!(err instanceof PortTaken) || attempt >= 5) throw err;
    }
  }
}

async function startOnce(opts: DrachtioServerOptions): Promise<DrachtioServer> {
  const dir = mkdtempSync(join(tmpdir(), 'drachtio-'));
  const secret = `s${Math.random().toString(36).slice(2)}`;
  const adminPort = await freeSipPort();
  const sipPort = await freeSipPort();
  const tlsPort = opts.tls ? await freeSipPort() : undefined;
  const contacts = [`<contact>sip:127.0.0.1:${sipPort};transport=udp,tcp</contact>`];
  if (opts.ipv6) contacts.push(`<contact>sip:[::1]:${sipPort};transport=udp,tcp</contact>`);
  if (tlsPort) contacts.push(`<contact>sip:127.0.0.1:${tlsPort};transport=tls</contact>`);
  const tls = opts.tls ? `<tls><key-file>${opts.tls.key}</key-file><cert-file>${opts.tls.cert}</cert-file></tls>` : '';
  const conf = join(dir, 'drachtio.conf.xml');
  writeFileSync(
    conf,
    `<drachtio>
  <admin port="${adminPort}" secret="${secret}">127.0.0.1</admin>
  <sip><contacts>${contacts.join('')}</contacts>${tls}</sip>
  <cdrs>false</cdrs>
  <logging><console/><sofia-loglevel>${opts.traceSip ? 9 : 3}</sofia-loglevel><loglevel>info</loglevel></logging>
</drachtio>
`,
  );
  let out = '';
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();

  const launch = async () => {
    const c = spawn(DRACHTIO_BIN, ['-f', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    child = c;
    c.stdout!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-2_000_000)));
    c.stderr!.on('data', (d: Buffer) => (out = (out + d.toString()).slice(-2_000_000)));
    let gone = false;
    exited = new Promise<void>((r) =>
      c.once('exit', () => {
        gone = true;
        r();
      }),
    );
    const deadline = Date.now() + 15_000;
    while (!(await portAccepts(adminPort))) {
      if (gone && tlsPort && TLS_UNSUPPORTED.test(out)) throw new DrachtioTlsUnsupported();
      if (gone && /Address already in use/.test(out)) throw new PortTaken(out.slice(-3000));
      if (gone) throw new Error(`drachtio-server exited at start:\n${out.slice(-3000)}`);
      if (Date.now() > deadline) {
        c.kill('SIGKILL');
        throw new Error(`drachtio-server admin port ${adminPort} never accepted:\n${out.slice(-3000)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const stop = async (signal: NodeJS.Signals = 'SIGTERM') => {
    const c = child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    process.kill(c.pid!, signal);
    const kill = setTimeout(
      () => c.exitCode === null && c.signalCode === null && process.kill(c.pid!, 'SIGKILL'),
      5000,
    );
    await exited;
    clearTimeout(kill);
  };

  try {
    await launch();
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  if (tlsPort) {
    // Its SIP stack reports a TLS contact it cannot open right after starting the UDP/TCP ones.
    await new Promise((r) => setTimeout(r, 300));
    if (TLS_UNSUPPORTED.test(out)) {
      await stop();
      rmSync(dir, { recursive: true, force: true });
      throw new DrachtioTlsUnsupported();
    }
  }
  return {
    adminPort,
    sipPort,
    tlsPort,
    secret,
    get pid() {
      return child!.pid!;
    },
    output: () => out,
    kill: stop,
    relaunch: launch,
    async stop() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
