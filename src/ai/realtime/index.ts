export { RealtimeBackend } from './backend.js';
export { RealtimeSession, type RealtimeHooks, type RealtimeStats } from './session.js';
export { ToolRegistry, type Tool, type ToolContext, type ToolResult } from './tools.js';
export { sessionConfig, wireFormatFor } from './protocol.js';
