import opusModule from '@discordjs/opus';
import { tone } from '../../support/audio.js';
import { GraphStub } from './graph-stub.js';
import { WhatsAppUser } from './user.js';

/**
 * Child process for the WhatsApp benchmark: "Meta's side" (Graph stand-in + simulated users) in
 * its own process, so the gateway's CPU can be measured alone. Driven over IPC by bench/whatsapp.ts.
 */
type Command =
  { type: 'calls'; count: number; webhookUrl: string; appSecret: string } | { type: 'hangup' } | { type: 'exit' };

const send = (msg: unknown) => process.send?.(msg);
const graph = new GraphStub();
const users: WhatsAppUser[] = [];
let next = 0;

// One second of a 500 Hz tone, Opus-encoded once and looped: keeps this process cheap.
const enc = new opusModule.OpusEncoder(48000, 1);
const loop = Array.from({ length: 50 }, (_, i) => {
  const pcm = tone(500, 48000, 20, 8000, (2 * Math.PI * 500 * i * 960) / 48000);
  return enc.encode(Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength));
});

async function place(count: number, webhookUrl: string, appSecret: string): Promise<void> {
  const batch = Array.from({ length: count }, () => {
    const u = new WhatsAppUser({ webhookUrl, appSecret, graph, number: `2507${String(next++).padStart(8, '0')}` });
    users.push(u);
    return u;
  });
  let failed = 0;
  // Ten call set-ups at a time, as calls arrive in practice (not all in the same millisecond).
  for (let i = 0; i < batch.length; i += 10) {
    const res = await Promise.allSettled(batch.slice(i, i + 10).map((u) => u.call(20_000)));
    failed += res.filter((r) => r.status === 'rejected').length;
  }
  for (const u of batch) u.startSending((i) => loop[i % loop.length]!);
  send({ type: 'connected', count: users.length, failed });
}

process.on('message', (cmd: Command) => {
  if (cmd.type === 'calls') void place(cmd.count, cmd.webhookUrl, cmd.appSecret);
  else if (cmd.type === 'hangup') {
    void Promise.all(users.splice(0).map((u) => u.hangup().catch(() => 0))).then(() => send({ type: 'hungup' }));
  } else if (cmd.type === 'exit') void graph.stop().then(() => process.exit(0));
});

void graph.start().then(() =>
  send({
    type: 'graph',
    baseUrl: graph.baseUrl,
    accessToken: graph.accessToken,
    phoneNumberId: graph.phoneNumberId,
    version: graph.version,
  }),
);
