import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { leasePortRange } from './ports.js';

/**
 * Ports for peers that bind a fixed port themselves (drachtio-server, kamailio, redis, sipp...).
 * A port the OS hands out for port 0 lies in the kernel's ephemeral range, where any outgoing
 * connection on the box may take it between our probe and the peer's bind (EADDRINUSE on a busy
 * CI machine). So they come from a leased range below it instead, handed out in order: no other
 * test process holds that range and no port-0 socket lands in it.
 */
let pool: { next: number; last: number } | undefined;

function nextLeasedPort(): number {
  if (!pool || pool.next > pool.last) {
    const [first, last] = leasePortRange(100);
    pool = { next: first, last };
  }
  return pool.next++;
}

const tcpFree = (port: number) =>
  new Promise<boolean>((res) => {
    const srv = createServer();
    srv.once('error', () => res(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => res(true)));
  });

const udpFree = (port: number) =>
  new Promise<boolean>((res) => {
    const u = createSocket('udp4');
    u.once('error', () => res(false));
    u.bind(port, '127.0.0.1', () => u.close(() => res(true)));
  });

async function leasedPort(free: (port: number) => Promise<boolean>): Promise<number> {
  for (let i = 0; i < 200; i++) {
    const port = nextLeasedPort();
    if (await free(port)) return port;
  }
  throw new Error('no free port in the leased test ranges');
}

/** A TCP port free on 127.0.0.1 (for a server that binds it itself). */
export function freeTcpPort(): Promise<number> {
  return leasedPort(tcpFree);
}

/** A UDP port free on 127.0.0.1 (for a peer that binds it itself). */
export function freeUdpPort(): Promise<number> {
  return leasedPort(udpFree);
}

/** A port free on both TCP and UDP on 127.0.0.1 right now (SIP servers listen on both). */
export function freeSipPort(): Promise<number> {
  return leasedPort(async (port) => (await tcpFree(port)) && (await udpFree(port)));
}
