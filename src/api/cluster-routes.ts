import type { NextFunction, Request, Response } from 'express';
import { slotKeys } from '../core/cluster-state.js';
import type { GatewayContext, TrunkView } from '../gateway.js';
import type { CallView } from './call-view.js';
import { sendError } from './errors.js';
import type { RemoteCalls } from './sse.js';

const sumCalls = (trunks: TrunkView[]) => trunks.reduce((n, t) => n + (t.activeCalls || 0), 0);

/** A trunk as GET /v1/trunks shows it in a cluster: the cluster's figure, then each instance's. */
export interface ClusterTrunkView extends TrunkView {
  instances: { id: string; activeCalls: number; registration?: TrunkView['registration'] }[];
}

/** One instance's share of a cluster-wide listing. */
export interface InstanceListing {
  id: string;
  calls: number;
  error?: string;
}

/**
 * The REST API across instances (issue 14): a call's requests reach the instance that owns it, the
 * live call list covers every instance, and a draining instance hands new outbound calls to a live
 * one. `forwarded(req)` marks requests another instance already forwarded: they are answered from
 * local state only, so nothing is forwarded twice or in a loop.
 */
export function clusterRoutes(ctx: GatewayContext, forwarded: (req: Request) => boolean) {
  const { cluster, peers, registry, log } = ctx;
  const wanted = (req: Request) => cluster.shared && !forwarded(req);
  const v1Path = (req: Request) => `/v1${req.url}`;

  /** /v1/calls/:id/...: run here when the call is here, else relay to its owner. */
  const toOwner = async (req: Request, res: Response, next: NextFunction): Promise<void> => {
    const id = String(req.params.id);
    // SSE streams are not relayed: the owner's own /events (or the ops console pointed at it) serves them.
    if (!wanted(req) || registry.get(id) || req.path.endsWith('/events')) return next();
    const owner = await cluster.ownerOf(id).catch(() => undefined);
    if (!owner || owner.instanceId === cluster.instanceId) return next();
    try {
      const r = await peers.send(owner.instanceId, req.method, req.originalUrl, req.body);
      log.info({ callId: id, owner: owner.instanceId, method: req.method, status: r.status }, 'API request relayed');
      res.status(r.status).json(r.body);
    } catch (err) {
      log.warn({ callId: id, owner: owner.instanceId, err: (err as Error).message }, 'API request not relayed');
      sendError(res, 502, 'owner_unreachable', `the instance owning call ${id} (${owner.instanceId}) did not answer`);
    }
  };

  /** Every live instance's calls: this one's from memory, the others' over the peer link (in parallel). */
  const listAll = async (
    req: Request,
    local: CallView[],
    limit: number,
    path = v1Path(req),
  ): Promise<{ calls: CallView[]; instances: InstanceListing[] }> => {
    const others = (await cluster.instances()).filter((i) => i.id !== cluster.instanceId);
    const listings: InstanceListing[] = [{ id: cluster.instanceId, calls: local.length }];
    const all = [...local];
    await Promise.all(
      others.map(async (i) => {
        try {
          const r = await peers.send(i.id, 'GET', path);
          const calls = (r.body as { calls?: CallView[] } | undefined)?.calls;
          if (r.status !== 200 || !Array.isArray(calls)) throw new Error(`status ${r.status}`);
          all.push(...calls);
          listings.push({ id: i.id, calls: calls.length });
        } catch (err) {
          // A partial list says so: the operator sees which instance is missing rather than fewer calls.
          listings.push({ id: i.id, calls: 0, error: (err as Error).message });
        }
      }),
    );
    return { calls: all.slice(0, limit), instances: listings };
  };

  /** POST /v1/calls on a draining instance: the live instance with the fewest calls places it. */
  const placeElsewhere = async (req: Request, res: Response, body: unknown): Promise<boolean> => {
    const live = (await cluster.instances().catch(() => []))
      .filter((i) => i.id !== cluster.instanceId && !i.draining)
      .sort((a, b) => a.calls - b.calls);
    for (const i of live) {
      try {
        const r = await peers.send(i.id, 'POST', '/v1/calls', body);
        log.info({ instance: i.id, status: r.status }, 'outbound call placed by another instance (draining here)');
        res.status(r.status).json(r.body);
        return true;
      } catch (err) {
        log.warn({ instance: i.id, err: (err as Error).message }, 'could not hand the outbound call over');
      }
    }
    return false;
  };

  /** GET /v1/events across the cluster: the others' calls join the snapshot, their events come by the relay. */
  const remoteCalls = (req: Request): RemoteCalls | undefined =>
    wanted(req)
      ? { relay: ctx.events, snapshot: async () => (await listAll(req, [], 10_000, '/v1/calls')).calls }
      : undefined;

  /**
   * GET /v1/trunks across the cluster: `activeCalls` is the trunk's cluster-wide count (the counter
   * `maxCalls` is enforced on, so the two always agree), and `instances` each instance's share and
   * registration (every instance registers its own contact with the carrier).
   */
  const trunksAll = async (
    local: TrunkView[],
  ): Promise<{ trunks: ClusterTrunkView[]; instances: InstanceListing[] }> => {
    const others = (await cluster.instances().catch(() => [])).filter((i) => i.id !== cluster.instanceId);
    const views = new Map<string, TrunkView[]>([[cluster.instanceId, local]]);
    const listings: InstanceListing[] = [{ id: cluster.instanceId, calls: sumCalls(local) }];
    await Promise.all(
      others.map(async (i) => {
        try {
          const r = await peers.send(i.id, 'GET', '/v1/trunks');
          const trunks = (r.body as { trunks?: TrunkView[] } | undefined)?.trunks;
          if (r.status !== 200 || !Array.isArray(trunks)) throw new Error(`status ${r.status}`);
          views.set(i.id, trunks);
          listings.push({ id: i.id, calls: sumCalls(trunks) });
        } catch (err) {
          listings.push({ id: i.id, calls: 0, error: (err as Error).message });
        }
      }),
    );
    const trunks = await Promise.all(
      local.map(async (t) => {
        const instances = [...views].map(([id, list]) => {
          const v = list.find((x) => x.name === t.name);
          return { id, activeCalls: v?.activeCalls ?? 0, ...(v?.registration && { registration: v.registration }) };
        });
        // Redis unreachable: the instances' own counts are the next best figure.
        const counted = await cluster.count(slotKeys.trunk(t.name)).catch(() => undefined);
        return { ...t, activeCalls: counted ?? instances.reduce((n, i) => n + i.activeCalls, 0), instances };
      }),
    );
    return { trunks, instances: listings };
  };

  return { wanted, toOwner, listAll, placeElsewhere, remoteCalls, trunksAll };
}
