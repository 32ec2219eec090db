import client from 'prom-client';
import type { Call } from '../core/call.js';
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
  readonly jitterMs: client.Histogram<'front'>;
  readonly uplinkLatencyMs: client.Histogram;
  readonly bargeInMs: client.Histogram;
  readonly aiErrors: client.Counter<'route'>;
  readonly webhookRejections: client.Counter<'source' | 'reason'>;
  readonly answerToAudioMs: client.Histogram<'share'>;
  readonly turnLatencyMs: client.Histogram<'share'>;
  readonly responseFailures: client.Counter<'route' | 'reason'>;
  readonly registrationUp: client.Gauge<'trunk'>;
  readonly registrationFailures: client.Counter<'trunk' | 'code'>;
  readonly recordsLost: client.Counter;
  readonly recordingFailures: client.Counter;

  constructor(registry: CallRegistry) {
    const r = this.registry;
    client.collectDefaultMetrics({ register: r, prefix: 'gateway_process_' });
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
    this.jitterMs = new client.Histogram({
      name: 'gateway_call_jitter_ms',
      help: 'Per call: RFC 3550 interarrival jitter at the end of the call',
      labelNames: ['front'],
      buckets: [1, 2, 5, 10, 20, 40, 80, 160],
      registers: [r],
    });
    this.uplinkLatencyMs = new client.Histogram({
      name: 'gateway_added_latency_ms',
      help: 'Gateway processing per caller frame, leg to AI (conversion + send)',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5],
      registers: [r],
    });
    this.bargeInMs = new client.Histogram({
      name: 'gateway_barge_in_ms',
      help: "Gateway's share of barge-in: speech start seen to playout cleared",
      buckets: [0.01, 0.1, 0.5, 1, 5, 20],
      registers: [r],
    });
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
    const latencyBuckets = [50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 3000, 5000, 10000];
    this.answerToAudioMs = new client.Histogram({
      name: 'gateway_answer_to_first_ai_audio_ms',
      help: 'Call answered → first AI audio written to the caller; share = total | gateway | ai',
      labelNames: ['share'],
      buckets: latencyBuckets,
      registers: [r],
    });
    this.turnLatencyMs = new client.Histogram({
      name: 'gateway_turn_latency_ms',
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
    const h = sample.kind === 'answer' ? this.answerToAudioMs : this.turnLatencyMs;
    h.observe({ share: 'total' }, sample.totalMs);
    h.observe({ share: 'gateway' }, sample.gatewayMs);
    h.observe({ share: 'ai' }, sample.aiMs);
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
        this.jitterMs.observe({ front }, j.jitterMs);
      }
    });
  }
}
