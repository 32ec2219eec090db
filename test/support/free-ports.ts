import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';

/** A TCP port the OS just handed out on 127.0.0.1 and took back (for a server that binds it itself). */
export async function freeTcpPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

/** A port free on both TCP and UDP on 127.0.0.1 right now (SIP servers listen on both). */
export async function freeSipPort(): Promise<number> {
  for (let i = 0; i < 20; i++) {
    const port = await freeTcpPort();
    const udpFree = await new Promise<boolean>((res) => {
      const u = createSocket('udp4');
      u.once('error', () => res(false));
      u.bind(port, '127.0.0.1', () => u.close(() => res(true)));
    });
    if (udpFree) return port;
  }
  throw new Error('no port free on both TCP and UDP');
}
