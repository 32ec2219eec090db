/** The local TTS moved to core (the core's spoken apology uses it too); kept here for existing imports. */
export * from '../../core/audio/speech.js';
