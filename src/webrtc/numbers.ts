import type { GatewayConfig, WhatsAppNumberConfig } from '../config/schema.js';

/** One WhatsApp business number this gateway serves. */
export interface BusinessNumber {
  phoneNumberId: string;
  /** Digits only (as Meta writes numbers); empty when not configured and not yet learned. */
  displayNumber: string;
  route: string | undefined;
}

const digits = (n: string) => n.replace(/^\+/, '');

/**
 * The business numbers from config: `whatsapp.numbers`, plus the older single-number form
 * (`phoneNumberId` [+ `displayNumber`]) so existing configs keep working. A number whose display
 * number is not configured learns it from Meta's webhooks (`metadata.display_phone_number`).
 */
export class BusinessNumbers {
  private readonly byId = new Map<string, BusinessNumber>();

  constructor(wa: Pick<GatewayConfig['whatsapp'], 'numbers' | 'phoneNumberId' | 'displayNumber'>) {
    const list: WhatsAppNumberConfig[] = [...wa.numbers];
    if (wa.phoneNumberId) list.unshift({ phoneNumberId: wa.phoneNumberId, displayNumber: wa.displayNumber });
    for (const n of list) {
      this.byId.set(n.phoneNumberId, {
        phoneNumberId: n.phoneNumberId,
        displayNumber: digits(n.displayNumber),
        route: n.route,
      });
    }
  }

  get(phoneNumberId: string | undefined): BusinessNumber | undefined {
    return phoneNumberId ? this.byId.get(phoneNumberId) : undefined;
  }

  list(): BusinessNumber[] {
    return [...this.byId.values()];
  }

  /** The number outbound calls use: the one named by `from` (display number or ID), else the first. */
  pick(from: string | undefined): BusinessNumber | undefined {
    if (!from) return this.list()[0];
    const want = digits(from);
    return this.list().find((n) => n.phoneNumberId === want || (n.displayNumber && n.displayNumber === want));
  }

  /** Meta names the number in every webhook: fill in a display number config did not give. */
  learn(phoneNumberId: string, displayNumber: string | undefined): void {
    const n = this.byId.get(phoneNumberId);
    if (n && !n.displayNumber && displayNumber && /^\+?\d{6,15}$/.test(displayNumber)) {
      n.displayNumber = digits(displayNumber);
    }
  }
}
