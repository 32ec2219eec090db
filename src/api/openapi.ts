/** OpenAPI 3 description of the ops API, served at /v1/openapi.json and validated in tests. */

const error = { $ref: '#/components/responses/Error' };
const idParam = { name: 'id', in: 'path', required: true, schema: { type: 'string' } };
const json = (schema: object) => ({ content: { 'application/json': { schema } } });
const call = { $ref: '#/components/schemas/Call' };
const ok = { description: 'OK', ...json({ type: 'object', properties: { ok: { type: 'boolean' } } }) };
const std = { '400': error, '401': error, '404': error };

export const openApiDocument = {
  openapi: '3.0.3',
  info: {
    title: 'Voice gateway call control',
    version: '1.0.0',
    description:
      'Operate calls bridged between carriers / WhatsApp and speech AI. All /v1 endpoints need `Authorization: Bearer <api.token>`; GET streams also accept `?access_token=`.',
  },
  servers: [{ url: '/' }],
  security: [{ bearer: [] }],
  components: {
    securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
    responses: {
      Error: { description: 'Error', ...json({ $ref: '#/components/schemas/Error' }) },
    },
    schemas: {
      Error: {
        type: 'object',
        required: ['error'],
        properties: {
          error: {
            type: 'object',
            required: ['code', 'message'],
            properties: { code: { type: 'string' }, message: { type: 'string' } },
          },
        },
      },
      Trunk: {
        type: 'object',
        required: ['name', 'kind', 'match', 'activeCalls', 'maxCalls'],
        properties: {
          name: { type: 'string' },
          kind: { type: 'string', enum: ['ip', 'registration'] },
          match: { type: 'string', enum: ['ip', 'registration', 'both'] },
          allow: { type: 'array', items: { type: 'string' } },
          activeCalls: { type: 'integer' },
          maxCalls: { type: 'integer' },
          registration: {
            type: 'object',
            nullable: true,
            description: 'Registration trunks only',
            properties: {
              state: { type: 'string', enum: ['idle', 'registering', 'registered', 'failing', 'stopped'] },
              aor: { type: 'string' },
              registrar: { type: 'string' },
              target: { type: 'string', nullable: true },
              contact: { type: 'string', nullable: true },
              grantedExpiresSec: { type: 'integer', nullable: true },
              registeredAt: { type: 'string', nullable: true },
              expiresAt: { type: 'string', nullable: true },
              lastStatus: { type: 'integer', nullable: true, description: 'SIP status of the last answer (408: none)' },
              lastReason: { type: 'string', nullable: true },
              failures: { type: 'integer', description: 'Consecutive failed attempts' },
              nextAttemptAt: { type: 'string', nullable: true },
            },
          },
        },
      },
      TranscriptEntry: {
        type: 'object',
        required: ['role', 'text', 'at'],
        properties: {
          role: { type: 'string', enum: ['caller', 'ai'] },
          text: { type: 'string' },
          at: { type: 'number' },
        },
      },
      Call: {
        type: 'object',
        required: ['id', 'state', 'front', 'from', 'to', 'times', 'legs', 'transcript'],
        properties: {
          id: { type: 'string' },
          state: { type: 'string', enum: ['ringing', 'answered', 'bridged', 'ended'] },
          front: { type: 'string', enum: ['sip', 'whatsapp', 'api', 'test'] },
          trunk: { type: 'string', nullable: true },
          direction: { type: 'string', enum: ['inbound', 'outbound'] },
          from: { type: 'string' },
          to: { type: 'string' },
          externalId: { type: 'string', nullable: true },
          route: { type: 'string', nullable: true },
          times: { type: 'object', additionalProperties: { type: 'number' } },
          durationMs: { type: 'number' },
          endReason: {
            type: 'object',
            nullable: true,
            properties: { by: { type: 'string' }, cause: { type: 'string' }, detail: { type: 'string' } },
          },
          legs: {
            type: 'array',
            items: {
              type: 'object',
              properties: { id: { type: 'string' }, codec: { type: 'string' }, quality: { type: 'object' } },
            },
          },
          media: {
            type: 'object',
            nullable: true,
            description: 'AI formats, passthrough, mute, live levels, bridge stats',
          },
          latency: {
            type: 'object',
            description:
              'answerToFirstAudio {totalMs, gatewayMs, aiMs} (null until the AI spoke after answer, or firstTurn none); ' +
              'turns {count, p50TotalMs, p95TotalMs, samples}: caller end of speech → first AI audio at the leg',
          },
          transcript: { type: 'array', items: { $ref: '#/components/schemas/TranscriptEntry' } },
          toolCalls: { type: 'array', items: { type: 'object' } },
          signalling: {
            type: 'array',
            description:
              'SIP messages of the call in order (ladder): at, direction in|out, protocol, peer, summary, raw',
            items: { type: 'object' },
          },
          dropped: {
            type: 'object',
            description: 'Older transcript lines / tool calls let go (limits.maxTranscriptEntries, maxToolCalls)',
            properties: {
              transcript: { type: 'integer' },
              toolCalls: { type: 'integer' },
              signalling: { type: 'integer' },
            },
          },
        },
      },
    },
  },
  paths: {
    '/v1/calls': {
      get: {
        summary: 'List active calls, or ended call records with ended=true',
        parameters: [
          { name: 'state', in: 'query', schema: { type: 'string', enum: ['ringing', 'answered', 'bridged', 'ended'] } },
          {
            name: 'front',
            in: 'query',
            schema: { type: 'string', enum: ['sip', 'whatsapp', 'api', 'browser', 'test'] },
          },
          { name: 'trunk', in: 'query', schema: { type: 'string' } },
          { name: 'ended', in: 'query', schema: { type: 'string', enum: ['true', 'false'] } },
          { name: 'limit', in: 'query', schema: { type: 'integer', minimum: 1, maximum: 1000 } },
          // History search (ended=true): SQLite call records, newest first.
          { name: 'number', in: 'query', description: 'Part of the from or to number', schema: { type: 'string' } },
          { name: 'route', in: 'query', schema: { type: 'string' } },
          { name: 'outcome', in: 'query', description: 'End cause (endReason.cause)', schema: { type: 'string' } },
          { name: 'since', in: 'query', description: 'Ended at or after (ISO date)', schema: { type: 'string' } },
          { name: 'until', in: 'query', description: 'Ended before (ISO date)', schema: { type: 'string' } },
          { name: 'offset', in: 'query', description: 'Records to skip (pagination)', schema: { type: 'integer' } },
        ],
        responses: {
          '200': {
            description: 'Calls',
            ...json({ type: 'object', properties: { calls: { type: 'array', items: call } } }),
          },
          '400': error,
          '401': error,
        },
      },
      post: {
        summary: 'Place an outbound call (WhatsApp business-initiated or SIP via a trunk) bridged to a route',
        requestBody: {
          required: true,
          ...json({
            type: 'object',
            required: ['front', 'to'],
            additionalProperties: false,
            properties: {
              front: { type: 'string', enum: ['whatsapp', 'sip'] },
              to: { type: 'string', description: 'E.164 number' },
              from: { type: 'string' },
              trunk: { type: 'string' },
              route: { type: 'string' },
            },
          }),
        },
        responses: {
          '201': { description: 'Call placed', ...json(call) },
          '400': error,
          '401': error,
          '501': error,
          '502': error,
          '503': error,
        },
      },
    },
    '/v1/calls/{id}': {
      parameters: [idParam],
      get: {
        summary: 'One call, live or from the records',
        responses: { '200': { description: 'Call', ...json(call) }, ...std },
      },
      delete: {
        summary: 'Hang up',
        requestBody: { required: false, ...json({ type: 'object', properties: { reason: { type: 'string' } } }) },
        responses: { '200': { description: 'Ended call', ...json(call) }, ...std },
      },
    },
    '/v1/auth/session': {
      post: {
        summary:
          'Exchange the bearer token for an HttpOnly session cookie (dashboard; the cookie authorises GET and SSE only)',
        responses: { '204': { description: 'Set-Cookie: gw_ops=…; HttpOnly; SameSite=Strict' }, '401': error },
      },
      delete: { summary: 'Forget the session cookie', responses: { '204': { description: 'cookie cleared' } } },
    },
    '/v1/system/series': {
      get: {
        summary:
          "The console's system page: samples (every api.systemSampleMs, the last api.systemSamples) of active calls per front:/trunk:/route:, late-frame ratio, CPU % and memory MB, column-wise ({t, cpu, rssMb, heapMb, lateRatio, calls})",
        responses: { '200': { description: 'SystemSeries' }, '401': error },
      },
    },
    '/v1/auth/login': {
      post: {
        summary:
          "No api.token configured, loopback peers only: trade the start-up log's one-time login code ({code}) for a session cookie and this run's generated token ({token}). The code works once",
        responses: {
          '200': { description: '{token}; Set-Cookie: gw_ops=…; HttpOnly; SameSite=Strict' },
          '401': error,
          '404': error,
        },
      },
    },
    '/v1/calls/{id}/transfer': {
      parameters: [idParam],
      post: {
        summary:
          "Hand the call to a person: REFER, bridge (the gateway dials them through a trunk or a SIP URI) or auto (REFER, bridge when refused). Destination (E.164 or sip:/tel: URI) must be in the route's transfer.allow unless transfer.operatorOverride (403 otherwise). Resolves once the outcome is known; 409 transfer_failed with details.outcome busy / no_answer / rejected / no_capacity (the trunk or WhatsApp cap is full) / failed (the caller is back with the AI)",
        requestBody: {
          required: true,
          ...json({
            type: 'object',
            required: ['destination'],
            properties: {
              destination: { type: 'string' },
              mode: { type: 'string', enum: ['refer', 'bridge', 'auto'] },
              trunk: { type: 'string' },
              brief: { type: 'string', description: 'warm transfer: spoken to the person before the caller joins' },
            },
          }),
        },
        responses: { '200': ok, ...std, '403': error, '409': error },
      },
    },
    '/v1/calls/{id}/say': {
      parameters: [idParam],
      post: {
        summary: 'Make the AI say a text',
        requestBody: {
          required: true,
          ...json({ type: 'object', required: ['text'], properties: { text: { type: 'string' } } }),
        },
        responses: { '200': ok, ...std, '409': error },
      },
    },
    '/v1/calls/{id}/mute': {
      parameters: [idParam],
      post: {
        summary: "Stop (or resume) the caller's audio to the AI",
        requestBody: {
          required: true,
          ...json({ type: 'object', required: ['muted'], properties: { muted: { type: 'boolean' } } }),
        },
        responses: { '200': ok, ...std, '409': error },
      },
    },
    '/v1/calls/{id}/events': {
      parameters: [idParam],
      get: {
        summary: 'Server-Sent Events for one call: snapshot, state, transcript, tool_call, dtmf, quality, ended',
        responses: {
          '200': { description: 'Event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          ...std,
        },
      },
    },
    '/v1/events': {
      get: {
        summary: 'Server-Sent Events for all calls (dashboard): snapshot, call, transcript, levels, ended',
        description:
          "In a cluster the snapshot and the call/transcript/ended events cover every instance's calls (each event once; other instances' calls without signalling/qualityOverTime); levels are this instance's calls only. `overflow` says how many events were dropped while the snapshot was gathered.",
        responses: {
          '200': { description: 'Event stream', content: { 'text/event-stream': { schema: { type: 'string' } } } },
          '401': error,
        },
      },
    },
    '/v1/sessions/start': {
      post: {
        summary: 'Media-only mode: create the WebRTC leg and bridge for a WhatsApp call signalled elsewhere',
        requestBody: {
          required: true,
          ...json({
            type: 'object',
            required: ['callId', 'sdpOffer', 'fromNumber', 'toNumber'],
            properties: {
              callId: { type: 'string' },
              sdpOffer: { type: 'string' },
              fromNumber: { type: 'string' },
              toNumber: { type: 'string' },
              route: { type: 'string' },
            },
          }),
        },
        responses: {
          '201': {
            description: 'SDP answer to send in pre_accept/accept',
            ...json({
              type: 'object',
              properties: { sdpAnswer: { type: 'string' }, gatewayCallId: { type: 'string' } },
            }),
          },
          '400': error,
          '401': error,
          '501': error,
        },
      },
    },
    '/v1/sessions/{callId}/stop': {
      parameters: [{ name: 'callId', in: 'path', required: true, schema: { type: 'string' } }],
      post: { summary: 'End a media-only session', responses: { '200': ok, '401': error, '404': error, '501': error } },
    },
    '/v1/calls/{id}/recording': {
      parameters: [{ name: 'id', in: 'path', required: true, schema: { type: 'string' } }],
      get: {
        summary: 'The call recording (stereo WAV: caller left, AI right); Range requests answered with 206',
        responses: {
          '200': { description: 'WAV', content: { 'audio/wav': { schema: { type: 'string', format: 'binary' } } } },
          '206': { description: 'Part of the WAV' },
          '400': error,
          '401': error,
          '404': error,
        },
      },
    },
    '/v1/routes': {
      get: {
        summary: 'Configured AI routes (name, kind, whether it is routing.default): the console phone picks one',
        responses: {
          '200': {
            description: 'Routes',
            ...json({
              type: 'object',
              properties: {
                routes: {
                  type: 'array',
                  items: {
                    type: 'object',
                    properties: { name: { type: 'string' }, kind: { type: 'string' }, default: { type: 'boolean' } },
                  },
                },
              },
            }),
          },
          '401': error,
        },
      },
    },
    '/v1/trunks': {
      get: {
        summary: 'SIP trunks: IP or registration, active calls, and registration state',
        responses: {
          '200': {
            description: 'Trunks',
            ...json({
              type: 'object',
              properties: {
                trunks: {
                  type: 'array',
                  description:
                    'In a cluster activeCalls is the cluster-wide count (what maxCalls is enforced on) and each trunk has instances: [{ id, activeCalls, registration? }]',
                  items: { $ref: '#/components/schemas/Trunk' },
                },
                instances: {
                  type: 'array',
                  description: 'Cluster only: each instance asked, with an error when it did not answer',
                  items: { type: 'object' },
                },
              },
            }),
          },
          '401': error,
        },
      },
    },
  },
} as const;
