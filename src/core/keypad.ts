import type { KeypadConfig } from '../config/schema.js';
import type { Logger } from './logger.js';

/** What the model reads for one keypad input. */
export function keypadText(digits: string): string {
  return `The caller pressed these keys on their phone keypad: ${digits}`;
}

/**
 * Collects a caller's keypad digits into one input: delivered when the terminator is pressed (the
 * terminator itself is not passed on), when the caller pauses for `interDigitTimeoutMs`, or when
 * `maxDigits` are collected (a stranger holding a key cannot grow it without bound).
 */
export class KeypadCollector {
  private digits = '';
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly cfg: KeypadConfig,
    private readonly deliver: (digits: string) => void,
    private readonly log: Logger,
  ) {}

  press(digit: string): void {
    if (this.stopped || !/^[0-9*#A-D]$/.test(digit)) return;
    clearTimeout(this.timer);
    if (this.cfg.terminator !== '' && digit === this.cfg.terminator) {
      // A terminator alone is still an answer ("press # to continue").
      return this.flush(this.digits === '' ? digit : undefined);
    }
    this.digits += digit;
    if (this.digits.length >= this.cfg.maxDigits) return this.flush();
    this.timer = setTimeout(() => this.flush(), this.cfg.interDigitTimeoutMs);
  }

  private flush(only?: string): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    const digits = only ?? this.digits;
    this.digits = '';
    if (digits === '') return;
    this.log.info({ digits }, 'caller keypad input to the AI');
    this.deliver(digits);
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
    this.digits = '';
  }
}
