import { pino, type Logger as PinoLogger } from 'pino';

export type Logger = PinoLogger;

/** Secrets must never reach the logs, whatever object they ride in on. */
const REDACT = [
  '*.apiKey',
  '*.accessToken',
  '*.appSecret',
  '*.verifyToken',
  '*.webhookSecret',
  '*.password',
  '*.token',
  '*.secret',
  'headers.authorization',
];

export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, redact: { paths: REDACT, censor: '[redacted]' }, base: { svc: 'voice-gateway' } });
}

/** A logger for tests: silent unless LOG_LEVEL is set. */
export function testLogger(): Logger {
  return pino({ level: process.env.LOG_LEVEL ?? 'silent' });
}
