import type { HttpToolConfig, RealtimeRouteConfig } from '../../config/schema.js';
import type { Logger } from '../../core/logger.js';
import { TransferPolicy } from '../../core/transfer-policy.js';
import type { CallControl, ToolCallRecord } from '../session.js';
import type { ClientEventOf, RealtimeFunctionTool, ServerEventOf } from './protocol.js';

/** Longest tool output handed back to the model; a runaway HTTP body must not flood the session. */
const MAX_OUTPUT_CHARS = 16_000;

export interface ToolContext {
  callId: string;
  log: Logger;
  control: CallControl;
  /** Aborted when the call ends, so in-flight HTTP tools stop. */
  signal: AbortSignal;
}

export interface ToolResult {
  /** The `output` string of the function_call_output item (JSON text). */
  output: string;
  /** Ask the model to respond to the output (`response.create`). */
  respond: boolean;
  /** Runs after the output has been sent (e.g. hang up once the goodbye has played). */
  after?: () => void;
}

export interface Tool {
  readonly definition: RealtimeFunctionTool & { name: string };
  run(args: Record<string, unknown>, ctx: ToolContext): Promise<ToolResult>;
}

const json = (v: unknown) => JSON.stringify(v);

/** Built-in: the model ends the call; the goodbye it already said plays out first. */
const endCall: Tool = {
  definition: {
    type: 'function',
    name: 'end_call',
    description:
      'Hang up the phone call. Say goodbye first; the call ends once the caller has heard everything you said.',
    parameters: { type: 'object', properties: { reason: { type: 'string' } } },
  },
  async run(args, ctx) {
    const reason = typeof args.reason === 'string' ? args.reason : undefined;
    ctx.log.info({ reason }, 'AI asked to end the call');
    return { output: json({ ok: true }), respond: false, after: () => ctx.control.hangupAfterPlayout('end_call') };
  },
};

/**
 * Built-in: transfer to one of the route's allowed destinations (`transfer.allow`). The model only
 * chooses among them (the description lists them); anything else is refused with an output the
 * model can say to the caller, and a warn log for the operator. Never offered with an empty list.
 */
function transferCall(policy: TransferPolicy): Tool {
  const fallback = policy.fallback;
  return {
    definition: {
      type: 'function',
      name: 'transfer_call',
      description:
        `Transfer the caller to a person. Tell the caller first. Allowed destinations only: ${policy.describe()}.` +
        (fallback ? ` Without a destination the call goes to ${fallback}.` : ''),
      parameters: {
        type: 'object',
        properties: {
          destination: { type: 'string', description: `One of: ${policy.describe()}` },
          brief: {
            type: 'string',
            description: 'One or two sentences for the person taking the call: who is calling and what they need.',
          },
        },
        ...(fallback ? {} : { required: ['destination'] }),
      },
    },
    async run(args, ctx) {
      const requested = typeof args.destination === 'string' ? args.destination : undefined;
      const decision = policy.check(requested);
      if (!decision.ok) {
        ctx.log.warn({ requested, reason: decision.reason }, 'AI transfer refused: destination not allowed');
        return {
          output: json({
            ok: false,
            detail: `I cannot transfer calls there. Allowed destinations: ${policy.describe()}.`,
          }),
          respond: true,
        };
      }
      const brief = typeof args.brief === 'string' ? args.brief.slice(0, 500) : undefined;
      const r = await ctx.control.transfer(decision.destination, brief ? { brief } : undefined);
      ctx.log.info({ destination: decision.destination, ok: r.ok, detail: r.detail }, 'AI transfer request');
      return { output: json(r), respond: true };
    },
  };
}

/**
 * Built-in: the model presses keys on the call (RFC 4733 on SIP), e.g. to work an IVR on an outbound
 * call. Digits are checked before anything is sent.
 */
const sendDtmf: Tool = {
  definition: {
    type: 'function',
    name: 'send_dtmf',
    description: 'Press keys on the phone keypad during the call (for automated menus). Digits 0-9, * and #, in order.',
    parameters: {
      type: 'object',
      properties: { digits: { type: 'string', description: 'The keys to press, e.g. "1" or "4512#"' } },
      required: ['digits'],
    },
  },
  async run(args, ctx) {
    const digits = typeof args.digits === 'string' ? args.digits.replace(/[\s-]/g, '') : '';
    const r = ctx.control.sendDtmf
      ? ctx.control.sendDtmf(digits)
      : { ok: false, detail: 'this call cannot send keypad tones' };
    ctx.log.info({ digits: digits.slice(0, 40), ok: r.ok, detail: r.detail }, 'AI pressed keys');
    return { output: json(r), respond: false };
  },
};

/** A route-configured tool: the model's JSON arguments are POSTed to the tool's URL. */
function httpTool(cfg: HttpToolConfig): Tool {
  return {
    definition: { type: 'function', name: cfg.name, description: cfg.description, parameters: cfg.parameters },
    async run(args, ctx) {
      const t0 = performance.now();
      try {
        const res = await fetch(cfg.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'x-call-id': ctx.callId },
          body: json(args),
          signal: AbortSignal.any([ctx.signal, AbortSignal.timeout(cfg.timeoutMs)]),
        });
        const body = (await res.text()).slice(0, MAX_OUTPUT_CHARS);
        const ms = Math.round(performance.now() - t0);
        ctx.log.info({ tool: cfg.name, status: res.status, ms }, 'HTTP tool answered');
        if (!res.ok) return { output: json({ error: `HTTP ${res.status}`, body }), respond: true };
        return { output: body || json({ ok: true }), respond: true };
      } catch (err) {
        const e = err as Error;
        const timedOut = e.name === 'TimeoutError';
        ctx.log.warn({ tool: cfg.name, err: e.message, timedOut }, 'HTTP tool failed');
        return {
          output: json({ error: timedOut ? `no answer within ${cfg.timeoutMs} ms` : `tool unreachable: ${e.message}` }),
          respond: true,
        };
      }
    },
  };
}

/** The tools one route offers the model: the built-ins plus the route's HTTP tools. */
export class ToolRegistry {
  private readonly tools = new Map<string, Tool>();

  constructor(route: Pick<RealtimeRouteConfig, 'tools' | 'transferTarget'> & { transfer?: { allow: string[] } }) {
    this.add(endCall);
    this.add(sendDtmf);
    const policy = new TransferPolicy(route.transfer?.allow ?? [], route.transferTarget);
    if (!policy.empty) this.add(transferCall(policy));
    for (const t of route.tools) this.add(httpTool(t));
  }

  add(tool: Tool): void {
    this.tools.set(tool.definition.name, tool);
  }

  definitions(): RealtimeFunctionTool[] {
    return [...this.tools.values()].map((t) => t.definition);
  }

  /**
   * Answer one function call from the model (WebSocket session or SIP sideband alike): run the tool
   * and build the record for the call and the `function_call_output` item to send back. The caller
   * sends `reply`, then runs `result.after`, then asks for a response if `result.respond`.
   */
  async answer(
    ev: ServerEventOf<'response.function_call_arguments.done'>,
    ctx: ToolContext,
  ): Promise<{ record: ToolCallRecord; reply: ClientEventOf<'conversation.item.create'>; result: ToolResult }> {
    const at = Date.now();
    ctx.log.info({ tool: ev.name, toolCallId: ev.call_id }, 'AI called a tool');
    const result = await this.run(ev.name, ev.arguments, ctx);
    return {
      record: { name: ev.name, callId: ev.call_id, arguments: ev.arguments, output: result.output, at },
      reply: {
        type: 'conversation.item.create',
        item: { type: 'function_call_output', call_id: ev.call_id, output: result.output },
      },
      result,
    };
  }

  /** Run a tool call from the model. Never throws: failures become an error output the model can explain. */
  async run(name: string, argsJson: string, ctx: ToolContext): Promise<ToolResult> {
    const tool = this.tools.get(name);
    if (!tool) return { output: json({ error: `unknown tool "${name}"` }), respond: true };
    let args: Record<string, unknown>;
    try {
      const parsed: unknown = argsJson.trim() ? JSON.parse(argsJson) : {};
      if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new Error('not an object');
      args = parsed as Record<string, unknown>;
    } catch (err) {
      return { output: json({ error: `arguments are not a JSON object: ${(err as Error).message}` }), respond: true };
    }
    try {
      return await tool.run(args, ctx);
    } catch (err) {
      ctx.log.warn({ tool: name, err: (err as Error).message }, 'tool failed');
      return { output: json({ error: (err as Error).message }), respond: true };
    }
  }
}
