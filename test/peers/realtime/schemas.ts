import { z } from 'zod';

/**
 * What the OpenAI Realtime (GA) API accepts from a client, as zod schemas: one per client event
 * type, strict (an invented field is a violation), following the `openai` package's
 * RealtimeClientEvent types. The test server validates every event a gateway sends against these.
 */

const eventId = z.string().min(1).optional();
const base64 = z
  .string()
  .min(1)
  .regex(/^[A-Za-z0-9+/]*={0,2}$/, 'base64');

export const audioFormat = z.union([
  z.strictObject({ type: z.literal('audio/pcm'), rate: z.literal(24000).optional() }),
  z.strictObject({ type: z.literal('audio/pcmu') }),
  z.strictObject({ type: z.literal('audio/pcma') }),
]);

const serverVad = z.strictObject({
  type: z.literal('server_vad'),
  threshold: z.number().min(0).max(1).optional(),
  prefix_padding_ms: z.number().int().min(0).optional(),
  silence_duration_ms: z.number().int().min(0).optional(),
  create_response: z.boolean().optional(),
  interrupt_response: z.boolean().optional(),
  idle_timeout_ms: z.number().int().positive().nullable().optional(),
});
const semanticVad = z.strictObject({
  type: z.literal('semantic_vad'),
  eagerness: z.enum(['low', 'medium', 'high', 'auto']).optional(),
  create_response: z.boolean().optional(),
  interrupt_response: z.boolean().optional(),
});

const functionTool = z.strictObject({
  type: z.literal('function'),
  name: z.string().regex(/^[a-zA-Z0-9_-]{1,64}$/),
  description: z.string().optional(),
  parameters: z.record(z.string(), z.unknown()).optional(),
});

export const sessionSchema = z.strictObject({
  type: z.literal('realtime'),
  model: z.string().min(1).optional(),
  instructions: z.string().optional(),
  output_modalities: z
    .array(z.enum(['audio', 'text']))
    .length(1)
    .optional(),
  audio: z
    .strictObject({
      input: z
        .strictObject({
          format: audioFormat.optional(),
          turn_detection: z.union([serverVad, semanticVad, z.null()]).optional(),
          transcription: z
            .strictObject({
              model: z.string().optional(),
              language: z.string().optional(),
              prompt: z.string().optional(),
            })
            .nullable()
            .optional(),
          noise_reduction: z
            .strictObject({ type: z.enum(['near_field', 'far_field']) })
            .nullable()
            .optional(),
        })
        .optional(),
      output: z
        .strictObject({
          format: audioFormat.optional(),
          voice: z.string().min(1).optional(),
          speed: z.number().min(0.25).max(1.5).optional(),
        })
        .optional(),
    })
    .optional(),
  tools: z.array(functionTool).optional(),
  tool_choice: z
    .union([z.enum(['none', 'auto', 'required']), z.strictObject({ type: z.literal('function'), name: z.string() })])
    .optional(),
  max_output_tokens: z.union([z.number().int().min(1).max(4096), z.literal('inf')]).optional(),
  tracing: z.union([z.literal('auto'), z.null()]).optional(),
});

const textContent = z.strictObject({ type: z.literal('input_text'), text: z.string() });
const item = z.union([
  z.strictObject({
    type: z.literal('message'),
    role: z.literal('system'),
    id: z.string().optional(),
    content: z.array(textContent).min(1),
  }),
  z.strictObject({
    type: z.literal('message'),
    role: z.literal('user'),
    id: z.string().optional(),
    content: z
      .array(
        z.union([
          textContent,
          z.strictObject({ type: z.literal('input_audio'), audio: base64, transcript: z.string().optional() }),
        ]),
      )
      .min(1),
  }),
  z.strictObject({
    type: z.literal('message'),
    role: z.literal('assistant'),
    id: z.string().optional(),
    content: z.array(z.strictObject({ type: z.literal('output_text'), text: z.string() })).min(1),
  }),
  z.strictObject({
    type: z.literal('function_call_output'),
    call_id: z.string().min(1),
    output: z.string(),
    id: z.string().optional(),
  }),
]);

const responseParams = z.strictObject({
  instructions: z.string().optional(),
  output_modalities: z
    .array(z.enum(['audio', 'text']))
    .length(1)
    .optional(),
  conversation: z.string().optional(),
  input: z.array(item).optional(),
  metadata: z.record(z.string(), z.string()).optional(),
  max_output_tokens: z.union([z.number().int().min(1).max(4096), z.literal('inf')]).optional(),
  tools: z.array(functionTool).optional(),
  tool_choice: z
    .union([z.enum(['none', 'auto', 'required']), z.strictObject({ type: z.literal('function'), name: z.string() })])
    .optional(),
});

export const clientEventSchemas = {
  'session.update': z.strictObject({ type: z.literal('session.update'), event_id: eventId, session: sessionSchema }),
  'input_audio_buffer.append': z.strictObject({
    type: z.literal('input_audio_buffer.append'),
    event_id: eventId,
    audio: base64,
  }),
  'input_audio_buffer.commit': z.strictObject({ type: z.literal('input_audio_buffer.commit'), event_id: eventId }),
  'input_audio_buffer.clear': z.strictObject({ type: z.literal('input_audio_buffer.clear'), event_id: eventId }),
  'conversation.item.create': z.strictObject({
    type: z.literal('conversation.item.create'),
    event_id: eventId,
    previous_item_id: z.string().nullable().optional(),
    item,
  }),
  'conversation.item.retrieve': z.strictObject({
    type: z.literal('conversation.item.retrieve'),
    event_id: eventId,
    item_id: z.string().min(1),
  }),
  'conversation.item.truncate': z.strictObject({
    type: z.literal('conversation.item.truncate'),
    event_id: eventId,
    item_id: z.string().min(1),
    content_index: z.literal(0),
    audio_end_ms: z.number().int().min(0),
  }),
  'conversation.item.delete': z.strictObject({
    type: z.literal('conversation.item.delete'),
    event_id: eventId,
    item_id: z.string().min(1),
  }),
  'response.create': z.strictObject({
    type: z.literal('response.create'),
    event_id: eventId,
    response: responseParams.optional(),
  }),
  'response.cancel': z.strictObject({
    type: z.literal('response.cancel'),
    event_id: eventId,
    response_id: z.string().min(1).optional(),
  }),
  // output_audio_buffer.clear exists only on WebRTC/SIP transports: over WebSocket it is a violation.
} as const;

export type ClientEventType = keyof typeof clientEventSchemas;
export type ClientEventOf<T extends ClientEventType> = z.infer<(typeof clientEventSchemas)[T]>;
export type SessionConfig = z.infer<typeof sessionSchema>;
