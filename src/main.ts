import { loadConfig } from './config/load.js';
import { GatewayError } from './core/errors.js';
import { createLogger } from './core/logger.js';
import { Gateway } from './gateway.js';
import { buildFronts } from './fronts.js';

const configPath = process.env.GATEWAY_CONFIG ?? 'config/default.yaml';
/** Longest a fatal-error shutdown may take before the process exits regardless. */
const FATAL_DEADLINE_MS = 5000;

async function main(): Promise<void> {
  let config;
  try {
    config = loadConfig(configPath);
  } catch (err) {
    // Config errors name the key, the bad value and what was expected; nothing else starts.
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(2);
  }
  const log = createLogger(process.env.LOG_LEVEL ?? config.logLevel);
  // Set once started; the fatal handlers below are installed before it exists.
  const running: { gateway?: Gateway } = {};
  // A throw or a rejection nobody caught means the process can no longer be trusted. Before the
  // supervisor restarts it: log, end every call cleanly (BYE / Graph terminate, so no caller hears
  // dead air and no carrier bills a ghost call), flush the records, then exit non-zero. A hard
  // deadline covers a shutdown that itself hangs.
  let fatal = false;
  const die = (what: string, err: unknown) => {
    const e = err instanceof Error ? err : new Error(String(err));
    log.fatal({ err: e.message, stack: e.stack }, `${what}: ending all calls and exiting`);
    if (fatal) return;
    fatal = true;
    const gateway = running.gateway;
    if (!gateway) process.exit(70);
    setTimeout(() => process.exit(70), FATAL_DEADLINE_MS);
    void gateway
      .stop('fatal_error', 0)
      .catch((stopErr: unknown) => log.error({ err: (stopErr as Error).message }, 'fatal shutdown failed'))
      .finally(() => process.exit(70));
  };
  process.on('unhandledRejection', (reason) => die('unhandled promise rejection', reason));
  process.on('uncaughtException', (err) => die('uncaught exception', err));
  log.info({ config: configPath }, 'starting voice gateway');
  const gateway = new Gateway(config, log);
  running.gateway = gateway;
  for (const front of buildFronts(gateway.ctx)) gateway.addFront(front);
  await gateway.start();
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      // The operator means it: a second signal does not wait for the drain.
      log.warn({ signal }, 'second signal during shutdown: exiting now');
      process.exit(130);
    }
    stopping = true;
    log.info({ signal }, 'shutting down');
    void gateway.stop('shutdown').then(() => process.exit(0));
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  const code = err instanceof GatewayError ? err.code : 'fatal';
  process.stderr.write(`gateway failed to start (${code}): ${(err as Error).message}\n`);
  process.exit(1);
});
