import type { Gateway } from '../../../src/gateway.js';
import { startTestGateway } from '../../support/gateway.js';
import type { OpenAiApiStandIn } from './api-standin.js';
import { FakeOpenAiSipDialer } from './fake-dialer.js';
import type { OpenAiSipPeer } from './sip-peer.js';

/** The OpenAI project the SIP tests' routes serve (the peer's default URI and webhook path). */
export const TEST_PROJECT = 'proj_test';

export interface StandInKeys {
  /** The webhook signing secret (whsec_...). */
  secret: string;
  apiKey: string;
  /** The API stand-in's base URL. */
  apiBaseUrl: string;
}

/** An `openai-sip` route for the test project against the API stand-in; `extra` sets the rest. */
export const openAiSipRoute = (keys: StandInKeys, extra: Record<string, unknown> = {}) => ({
  kind: 'openai-sip',
  projectId: TEST_PROJECT,
  webhookSecret: keys.secret,
  apiKey: keys.apiKey,
  apiBaseUrl: keys.apiBaseUrl,
  ...extra,
});

/** The route dialling the OpenAI SIP peer: no sideband, and webhooks for calls it did not place are rejected. */
export const sipPeerRoute = (peer: OpenAiSipPeer, keys: StandInKeys) =>
  openAiSipRoute(keys, {
    sipUri: peer.uri(TEST_PROJECT),
    instructions: 'You answer test calls.',
    sideband: false,
    unmatched: 'reject',
  });

/** The number the fake-dialer gateway routes to `openai_sip` (everything else goes to `local`). */
export const OPENAI_SIP_NUMBER = '+250700000111';

/**
 * A test gateway whose `openai_sip` route (the test project, `route` adding to it) takes calls to
 * OPENAI_SIP_NUMBER, dialling through a fake dialer that posts the signed webhook to the route's
 * own path; the `local` route greets everyone else.
 */
export async function startFakeDialGateway(
  keys: StandInKeys,
  standIn: OpenAiApiStandIn,
  route: Record<string, unknown>,
): Promise<{ gw: Gateway; dialer: FakeOpenAiSipDialer }> {
  const gw = await startTestGateway({
    routes: {
      local: { kind: 'local', greeting: 'Hello caller.' },
      openai_sip: openAiSipRoute(keys, route),
    },
    routing: { default: 'local', rules: [{ to: OPENAI_SIP_NUMBER, route: 'openai_sip' }] },
  });
  const dialer = new FakeOpenAiSipDialer(
    () => `http://127.0.0.1:${gw.httpPort}/webhooks/openai/openai_sip`,
    keys.secret,
    standIn,
  );
  gw.ctx.legDialer = dialer;
  return { gw, dialer };
}
