import { createSocket } from 'node:dgram';
import { sleep } from './gateway.js';

/** Resolves once something has bound UDP `port` on 127.0.0.1 (e.g. sipp listening as a UAS), within 20 s. */
export async function udpBound(port: number): Promise<void> {
  for (let i = 0; i < 400; i++) {
    const free = await new Promise<boolean>((res) => {
      const u = createSocket('udp4');
      u.once('error', () => res(false));
      u.bind(port, '127.0.0.1', () => u.close(() => res(true)));
    });
    if (!free) return;
    await sleep(50);
  }
  throw new Error(`nothing listens on UDP ${port}`);
}
