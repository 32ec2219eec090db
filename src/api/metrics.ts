import client from 'prom-client';
import type { Call } from '../core/call.js';
import type { ClockStats } from '../core/frame-clock.js';
import type { CallRegistry } from '../core/registry.js';
import type { LatencySample } from '../core/turn-latency.js';

/**
 * Prometheus metrics for one gateway. Uses its own Registry (not prom-client's global default),
 * so two gateways in one process (tests) never share counters.
 */
export class GatewayMetrics {
  readonly registry = new client.Registry();
  readonly callsTotal: client.Counter<'front' | 'trunk' | 'route' | 'outcome'>;
  readonly setupSeconds: client.Histogram<'front'>;
  readonly packetLossRatio: client.Histogram<'front'>;
  readonly jitterSeconds: client.Histogram<'front'>;
  /** Observed in ms by the media path; recorded in seconds (Prometheus base units). */
  readonly uplinkLatency: MsHistogram;
  readonly bargeIn: MsHistogram;
  readonly aiErrors: client.Counter<'route'>;
  readonly webhookRejections: client.Counter<'source' | 'reason'>;
  readonly answerToAudioSeconds: client.Histogram<'share'>;
  readonly turnLatencySeconds: client.Histogram<'share'>;
  readonly responseFailures: client.Counter<'route' | 'reason'>;
  readonly registrationUp: client.Gauge<'trunk'>;
  readonly registrationFailures: client.Counter<'trunk' | 'code'>;
  readonly recordsLost: client.Counter;
  readonly recordingFailures: client.Counter;

  /** `clockStats`: the media clock's frame counters (late-frame ratio on the system page and Grafana). */
  constructor(registry: CallRegistry, clockStats?: ClockStats) {
    const r = this.registry;
    // Standard names (process_cpu_seconds_total, nodejs_heap_size_used_bytes, ...), no prefix:
    // the stock Node.js dashboards and alerts look for exactly these.
    client.collectDefaultMetrics({ register: r });
    this.callsTotal = new client.Counter({
      name: 'gateway_calls_total',
      help: 'Calls ended, by front, trunk, route and outcome (end cause)',
      labelNames: ['front', 'trunk', 'route', 'outcome'],
      registers: [r],
    });
    new client.Gauge({
      name: 'gateway_active_calls',
      help: 'Calls in progress, by front and state',
      labelNames: ['front', 'state'],
      registers: [r],
      collect() {
        this.reset();
        for (const c of registry.list()) this.inc({ front: c.info.front, state: c.state });
      },
    });
    this.setupSeconds = new client.Histogram({
      name: 'gateway_call_setup_seconds',
      help: 'From the call arriving to audio bridged to the AI',
      labelNames: ['front'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10],
      registers: [r],
    });
    this.packetLossRatio = new client.Histogram({
      name: 'gateway_call_packet_loss_ratio',
      help: 'Per call: inbound packets lost / expected',
      labelNames: ['front'],
      buckets: [0, 0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2],
      registers: [r],
    });
    this.jitterSeconds = new client.Histogram({
      name: 'gateway_call_jitter_seconds',
      help: 'Per call: RFC 3550 interarrival jitter at the end of the call',
      labelNames: ['front'],
      buckets: seconds([1, 2, 5, 10, 20, 40, 80, 160]),
      registers: [r],
    });
    this.uplinkLatency = msHistogram(r, {
      name: 'gateway_added_latency_seconds',
      help: 'Gateway processing per caller frame, leg to AI (conversion + send)',
      buckets: seconds([0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5]),
    });
    this.bargeIn = msHistogram(r, {
      name: 'gateway_barge_in_seconds',
      help: "Gateway's share of barge-in: speech start seen to playout cleared",
      buckets: seconds([0.01, 0.1, 0.5, 1, 5, 20]),
    });
    if (clockStats) {
      new client.Counter({
        name: 'gateway_media_frames_total',
        help: 'Call audio frames scheduled by the media clock (one per call per 20 ms)',
        registers: [r],
        collect() {
          this.reset();
          this.inc(clockStats.ticks);
        },
      });
      new client.Counter({
        name: 'gateway_media_frames_late_total',
        help: 'Call audio frames delivered more than 5 ms behind schedule (late/total = late-frame ratio)',
        registers: [r],
        collect() {
          this.reset();
          this.inc(clockStats.late);
        },
      });
      new client.Counter({
        name: 'gateway_media_frames_skipped_total',
        help: 'Call audio frames never delivered: the event loop stalled past the catch-up limit',
        registers: [r],
        collect() {
          this.reset();
          this.inc(clockStats.skipped);
        },
      });
    }
    this.aiErrors = new client.Counter({
      name: 'gateway_ai_errors_total',
      help: 'Errors reported by AI sessions',
      labelNames: ['route'],
      registers: [r],
    });
    this.webhookRejections = new client.Counter({
      name: 'gateway_webhook_rejections_total',
      help: 'Webhook deliveries refused (bad signature, stale, replay, malformed)',
      labelNames: ['source', 'reason'],
      registers: [r],
    });
    const latencyBuckets = seconds([50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000]);
    this.answerToAudioSeconds = new client.Histogram({
      name: 'gateway_answer_to_first_ai_audio_seconds',
      help: 'Call answered → first AI audio written to the caller; share = total | gateway | ai',
      labelNames: ['share'],
      buckets: latencyBuckets,
      registers: [r],
    });
    this.turnLatencySeconds = new client.Histogram({
      name: 'gateway_turn_latency_seconds',
      help: "Caller's end of speech → first AI audio written to the caller; share = total | gateway | ai",
      labelNames: ['share'],
      buckets: latencyBuckets,
      registers: [r],
    });
    this.responseFailures = new client.Counter({
      name: 'gateway_ai_response_failures_total',
      help: 'AI responses that ended failed or incomplete, by route and reason (rate_limit_exceeded, content_filter, ...)',
      labelNames: ['route', 'reason'],
      registers: [r],
    });
    this.registrationUp = new client.Gauge({
      name: 'gateway_trunk_registration_up',
      help: 'Registration trunks: 1 while the registrar holds our binding, 0 otherwise',
      labelNames: ['trunk'],
      registers: [r],
    });
    this.registrationFailures = new client.Counter({
      name: 'gateway_trunk_registration_failures_total',
      help: 'Failed REGISTER attempts by trunk and SIP status (408: no answer)',
      labelNames: ['trunk', 'code'],
      registers: [r],
    });
    this.recordsLost = new client.Counter({
      name: 'gateway_call_records_lost_total',
      help: 'Call records given up on after retries (database locked, full or failing)',
      registers: [r],
    });
    this.recordingFailures = new client.Counter({
      name: 'gateway_recording_failures_total',
      help: 'Call recordings stopped by an I/O error (disk full, ...); the calls continued',
      registers: [r],
    });
    registry.on('created', (call) => this.watch(call));
  }

  /** One latency sample from a bridge (src/core/turn-latency.ts). */
  observeLatency(sample: LatencySample): void {
    const h = sample.kind === 'answer' ? this.answerToAudioSeconds : this.turnLatencySeconds;
    h.observe({ share: 'total' }, sample.totalMs / 1000);
    h.observe({ share: 'gateway' }, sample.gatewayMs / 1000);
    h.observe({ share: 'ai' }, sample.aiMs / 1000);
  }

  private watch(call: Call): void {
    const front = call.info.front;
    call.on('state', (s) => {
      if (s === 'bridged') this.setupSeconds.observe({ front }, (Date.now() - call.times.created) / 1000);
    });
    call.once('ended', (reason) => {
      this.callsTotal.inc({ front, trunk: call.info.trunk ?? '', route: call.route ?? '', outcome: reason.cause });
      for (const q of Object.values(call.quality)) {
        const j = q.jitter;
        if (!j) continue;
        const expected = j.received + j.lost;
        this.packetLossRatio.observe({ front }, expected > 0 ? j.lost / expected : 0);
        this.jitterSeconds.observe({ front }, j.jitterMs / 1000);
      }
    });
  }
}

/** A histogram fed milliseconds (what the media path measures) that records seconds. */
export interface MsHistogram {
  observeMs(ms: number): void;
}

function msHistogram(registry: client.Registry, opts: { name: string; help: string; buckets: number[] }): MsHistogram {
  const h = new client.Histogram({ ...opts, registers: [registry] });
  return { observeMs: (ms) => h.observe(ms / 1000) };
}

function seconds(ms: number[]): number[] {
  return ms.map((v) => v / 1000);
}
