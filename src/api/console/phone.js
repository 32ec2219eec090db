// Browser phone: sip.js over SIP-over-WebSocket (RFC 7118) to the gateway's /sip, WebRTC media.
// Vendored from node_modules (served under /vendor/sip.js/), no CDN, no build step.
import { Inviter, SessionState, UserAgent } from '/vendor/sip.js/index.js';

/** The digest username the gateway expects (src/sip/browser-calls.ts); the password is the ops token. */
const USER = 'ops';

/**
 * One phone: call(route) → talk → hangUp(); dtmf(digit); setMuted(bool). `levels` holds the
 * latest RMS (0..1) of the microphone and of the AI, measured with AnalyserNodes.
 */
export function createPhone({ token, onState, audio }) {
  const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
  const ua = new UserAgent({
    uri: UserAgent.makeURI(`sip:${USER}@${location.hostname}`),
    transportOptions: { server: `${scheme}://${location.host}/sip` },
    authorizationUsername: USER,
    authorizationPassword: token,
    logLevel: 'warn',
    sessionDescriptionHandlerFactoryOptions: {
      peerConnectionConfiguration: { iceServers: [] },
      iceGatheringTimeout: 1000,
    },
  });
  const levels = { local: 0, remote: 0, remoteMax: 0 };
  /** Listen-in sessions by gateway call id: { session, audio, analyser }. */
  const listening = new Map();
  let session;
  let meterTimer;
  let actx;

  function analyse(stream, key) {
    actx ??= new AudioContext();
    const analyser = actx.createAnalyser();
    // 4096 samples (~85 ms at 48 kHz) outlast the 50 ms meter tick, so no audio falls between
    // reads even when the page's timers run late.
    analyser.fftSize = 4096;
    actx.createMediaStreamSource(stream).connect(analyser);
    const buf = new Float32Array(analyser.fftSize);
    return () => {
      analyser.getFloatTimeDomainData(buf);
      let sum = 0;
      let peak = 0;
      for (const v of buf) {
        sum += v * v;
        peak = Math.max(peak, Math.abs(v));
      }
      levels[key] = Math.sqrt(sum / buf.length);
      // remoteMax is the loudest sample heard: a short greeting's peak, not its (gappy) mean.
      if (key === 'remote') levels.remoteMax = Math.max(levels.remoteMax, peak);
    };
  }

  function attachMedia() {
    const pc = session.sessionDescriptionHandler.peerConnection;
    const remote = new MediaStream(
      pc
        .getReceivers()
        .map((r) => r.track)
        .filter(Boolean),
    );
    audio.srcObject = remote;
    audio.play().catch(() => {});
    const local = new MediaStream(
      pc
        .getSenders()
        .map((s) => s.track)
        .filter(Boolean),
    );
    const tick = [analyse(remote, 'remote'), analyse(local, 'local')];
    meterTimer = setInterval(() => tick.forEach((f) => f()), 50);
  }

  /** A receive-only INVITE to `listen-<call id>`: the gateway answers with the call's two directions mixed. */
  async function listen(callId, onEnd) {
    if (listening.has(callId)) return;
    if (ua.state !== 'Started') await ua.start();
    const target = UserAgent.makeURI(`sip:listen-${encodeURIComponent(callId)}@${location.host}`);
    const inviter = new Inviter(ua, target, {
      // No microphone: an offer that only receives (recvonly), so the operator is never heard.
      sessionDescriptionHandlerOptions: {
        constraints: { audio: false, video: false },
        offerOptions: { offerToReceiveAudio: true },
      },
    });
    const entry = { session: inviter, audio: document.createElement('audio'), analyser: undefined };
    listening.set(callId, entry);
    inviter.stateChange.addListener((state) => {
      if (state === SessionState.Established) {
        const pc = inviter.sessionDescriptionHandler.peerConnection;
        const stream = new MediaStream(
          pc
            .getReceivers()
            .map((r) => r.track)
            .filter(Boolean),
        );
        // Chromium feeds a remote WebRTC stream into Web Audio only while a media element plays it.
        entry.audio.srcObject = stream;
        entry.audio.play().catch(() => {});
        actx ??= new AudioContext();
        entry.analyser = actx.createAnalyser();
        entry.analyser.fftSize = 8192;
        actx.createMediaStreamSource(stream).connect(entry.analyser);
      }
      if (state === SessionState.Terminated) {
        entry.audio.srcObject = null;
        listening.delete(callId);
        onEnd?.();
      }
    });
    await inviter.invite({
      requestDelegate: {
        onReject: (res) => {
          listening.delete(callId);
          onEnd?.(`${res.message.statusCode} ${res.message.reasonPhrase}`);
        },
      },
    });
  }

  async function stopListening(callId) {
    const s = listening.get(callId)?.session;
    if (!s) return;
    if (s.state === SessionState.Established) await s.bye();
    else if (s.state === SessionState.Establishing) await s.cancel();
  }

  /** Level (dBFS) of the listen-in audio around `hz` (the strongest FFT bin within ±1 bin). */
  function listenLevelAt(callId, hz) {
    const a = listening.get(callId)?.analyser;
    if (!a) return -Infinity;
    const bins = new Float32Array(a.frequencyBinCount);
    a.getFloatFrequencyData(bins);
    const i = Math.round((hz * a.fftSize) / a.context.sampleRate);
    return Math.max(bins[i - 1], bins[i], bins[i + 1]);
  }

  return {
    levels,
    listen,
    stopListening,
    listenLevelAt,
    isListening: (callId) => listening.has(callId),
    async call(route) {
      if (session) throw new Error('a call is in progress');
      if (ua.state !== 'Started') await ua.start();
      const target = UserAgent.makeURI(`sip:${encodeURIComponent(route || 'ai')}@${location.host}`);
      session = new Inviter(ua, target, {
        sessionDescriptionHandlerOptions: { constraints: { audio: true, video: false } },
      });
      session.stateChange.addListener((state) => {
        if (state === SessionState.Established) attachMedia();
        if (state === SessionState.Terminated) {
          clearInterval(meterTimer);
          session = undefined;
        }
        onState(state);
      });
      await session.invite({
        requestDelegate: {
          onReject: (res) => onState(`rejected: ${res.message.statusCode} ${res.message.reasonPhrase}`),
        },
      });
    },
    async hangUp() {
      if (!session) return;
      if (session.state === SessionState.Established) await session.bye();
      else if (session.state === SessionState.Establishing) await session.cancel();
    },
    dtmf(digit) {
      // RFC 4733 telephone-events on the media path (RTCDTMFSender).
      session?.sessionDescriptionHandler?.sendDtmf(digit);
    },
    setMuted(muted) {
      const pc = session?.sessionDescriptionHandler?.peerConnection;
      pc?.getSenders().forEach((s) => s.track && (s.track.enabled = !muted));
    },
    get inCall() {
      return !!session;
    },
  };
}
