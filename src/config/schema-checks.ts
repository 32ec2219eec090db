import { isIP } from 'node:net';
import type { z } from 'zod';
import type { RouteConfig } from './route-schema.js';

// Cross-field checks of the whole config (run by configSchema's superRefine).

/** With shared state the instances forward to each other: each needs a reachable URL and the secret. */
export function checkCluster(
  c: { redis: { url?: string }; advertiseUrl?: string; secret?: string; heartbeatSec: number; ttlSec: number },
  ctx: z.RefinementCtx,
): void {
  if (c.ttlSec < c.heartbeatSec * 2)
    ctx.addIssue({
      code: 'custom',
      path: ['cluster', 'ttlSec'],
      message: `at least twice cluster.heartbeatSec (${c.heartbeatSec}): one late heartbeat must not expire live calls`,
      input: c.ttlSec,
    });
  if (!c.redis.url) return;
  if (!c.advertiseUrl)
    ctx.addIssue({
      code: 'custom',
      path: ['cluster', 'advertiseUrl'],
      message: "required with cluster.redis.url: this instance's ops URL as the other instances reach it",
      input: undefined,
    });
  if (!c.secret)
    ctx.addIssue({
      code: 'custom',
      path: ['cluster', 'secret'],
      message: 'required with cluster.redis.url: the secret instances forward webhooks and API calls with',
      input: undefined,
    });
}

interface WhatsAppRequired {
  accessToken: string;
  appSecret: string;
  verifyToken: string;
  publicIp: string;
  phoneNumberId: string;
  numbers: { phoneNumberId: string }[];
}

export function checkWhatsApp(wa: WhatsAppRequired, ctx: z.RefinementCtx): void {
  const required = (k: 'accessToken' | 'appSecret' | 'verifyToken' | 'publicIp', why: string) => {
    if (!wa[k]) ctx.addIssue({ code: 'custom', path: ['whatsapp', k], message: why, input: '' });
  };
  required('accessToken', 'required when whatsapp.enabled');
  required('appSecret', 'required when whatsapp.enabled');
  required('verifyToken', 'required when whatsapp.enabled');
  required(
    'publicIp',
    "required when whatsapp.enabled: this host's public IP address, written into every ICE candidate Meta must reach",
  );
  if (wa.publicIp && (!isIP(wa.publicIp) || /^(0\.0\.0\.0|::)$/.test(wa.publicIp))) {
    ctx.addIssue({
      code: 'custom',
      path: ['whatsapp', 'publicIp'],
      message: 'a unicast IPv4 or IPv6 address Meta can reach',
      input: wa.publicIp,
    });
  }
  if (!wa.phoneNumberId && wa.numbers.length === 0) {
    ctx.addIssue({
      code: 'custom',
      path: ['whatsapp', 'numbers'],
      message: 'at least one business number ({ phoneNumberId, displayNumber }) when whatsapp.enabled',
      input: [],
    });
  }
  const ids = [...wa.numbers.map((n) => n.phoneNumberId), ...(wa.phoneNumberId ? [wa.phoneNumberId] : [])];
  const dup = ids.find((id, i) => ids.indexOf(id) !== i);
  if (dup) {
    ctx.addIssue({
      code: 'custom',
      path: ['whatsapp', 'numbers'],
      message: `phoneNumberId ${dup} listed twice`,
      input: dup,
    });
  }
}

/** Routes on one OpenAI project share its webhook endpoint, so they must agree on unmatched calls. */
export function checkOpenAiProjects(routes: Record<string, RouteConfig>, ctx: z.RefinementCtx): void {
  const byProject = new Map<string, { name: string; unmatched: string }>();
  for (const [name, r] of Object.entries(routes)) {
    if (r.kind !== 'openai-sip') continue;
    const first = byProject.get(r.projectId);
    if (!first) byProject.set(r.projectId, { name, unmatched: r.unmatched });
    else if (first.unmatched !== r.unmatched) {
      ctx.addIssue({
        code: 'custom',
        path: ['routes', name, 'unmatched'],
        message: `"${first.unmatched}" like route ${first.name}, which shares OpenAI project ${r.projectId}`,
        input: r.unmatched,
      });
    }
  }
}
