import { afterEach, describe, expect, it } from 'vitest';
import { waitFor } from '../support/gateway.js';
import { API_TOKEN, startHarness, type Harness } from '../peers/whatsapp/harness.js';

let h: Harness | undefined;
afterEach(async () => {
  await h?.stop();
  h = undefined;
});

describe('ops API on a live WhatsApp call', () => {
  it('DELETE /v1/calls/:id ends the call through Graph terminate and stores the record', async () => {
    h = await startHarness({ freqFor: () => 500 });
    const user = h.user('250788123999');
    await user.call();
    await waitFor(() => h!.gw.ctx.registry.list({ front: 'whatsapp', state: 'bridged' }).length === 1, 8000, 'bridged');
    const call = h.gw.ctx.registry.list({ front: 'whatsapp' })[0]!;
    const base = `http://127.0.0.1:${h.gw.httpPort}`;
    const auth = { authorization: `Bearer ${API_TOKEN}`, 'content-type': 'application/json' };
    const live = (await (await fetch(`${base}/v1/calls?front=whatsapp`, { headers: auth })).json()) as {
      calls: { id: string; legs: { codec: string }[] }[];
    };
    expect(live.calls.map((c) => c.id)).toEqual([call.id]);
    expect(live.calls[0]!.legs[0]!.codec).toBe('opus/48000');
    // The route allows no transfer destination: the token cannot transfer either.
    const tr = await fetch(`${base}/v1/calls/${call.id}/transfer`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ destination: '+250788000000' }),
    });
    expect(tr.status).toBe(403);
    const del = await fetch(`${base}/v1/calls/${call.id}`, {
      method: 'DELETE',
      headers: auth,
      body: JSON.stringify({ reason: 'operator test' }),
    });
    expect(del.status).toBe(200);
    const term = await h.graph.waitFor('terminate', user.waCallId, 5000);
    expect(term.problems).toEqual([]);
    const rec = (await (await fetch(`${base}/v1/calls/${call.id}`, { headers: auth })).json()) as {
      state: string;
      endReason: { by: string; cause: string };
    };
    expect(rec.state).toBe('ended');
    expect(rec.endReason).toMatchObject({ by: 'operator', cause: 'api_hangup' });
  });

  it('on shutdown, a new WhatsApp call is rejected while the active one drains, then is terminated', async () => {
    h = await startHarness({ freqFor: () => 500 });
    const first = h.user('250788100001');
    await first.call();
    await waitFor(() => h!.gw.ctx.registry.list({ front: 'whatsapp', state: 'bridged' }).length === 1, 8000, 'bridged');
    const stopping = h.gw.stop('shutdown', 1500);
    const late = h.user('250788100002');
    await late.postWebhook(late.connectWebhook(await late.createOffer()));
    const rejected = await h.graph.waitFor('reject', late.waCallId, 3000);
    expect(rejected.problems).toEqual([]);
    expect(h.graph.byAction('terminate', first.waCallId)).toHaveLength(0); // still draining
    await stopping;
    const term = await h.graph.waitFor('terminate', first.waCallId, 3000);
    expect(term.problems).toEqual([]);
  });
});
