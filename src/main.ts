import { loadConfig } from './config/load.js';
import { GatewayError } from './core/errors.js';
import { createLogger } from './core/logger.js';
import { Gateway } from './gateway.js';
import { buildFronts } from './fronts.js';

const configPath = process.env.GATEWAY_CONFIG ?? 'config/default.yaml';

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
  // A promise someone forgot to catch belongs to one call; Node 20 would kill the process (and every
  // other call) for it. Log it loudly instead. A synchronous throw that escapes is a real bug: log
  // it and exit so the supervisor restarts a clean process.
  process.on('unhandledRejection', (reason) => {
    log.error({ err: reason instanceof Error ? reason.message : String(reason) }, 'unhandled promise rejection');
  });
  process.on('uncaughtException', (err) => {
    log.fatal({ err: err.message, stack: err.stack }, 'uncaught exception: exiting');
    process.exit(70);
  });
  log.info({ config: configPath }, 'starting voice gateway');
  const gateway = new Gateway(config, log);
  for (const front of buildFronts(gateway.ctx)) gateway.addFront(front);
  await gateway.start();
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
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
