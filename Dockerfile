# syntax=docker/dockerfile:1
# Voice gateway image (issue 14). Config: config/default.yaml baked in, every key overridable with
# GW__<PATH> environment variables (README "Configuration"), secrets as env (${VAR} in the YAML).

# ---- build: native addons (@discordjs/opus, better-sqlite3) need a compiler ----
FROM node:20-bookworm AS build
WORKDIR /app
COPY package.json package-lock.json ./
# patches/: werift's DTLS fix, applied by the postinstall (patch-package is a runtime dependency so
# that --omit=dev still applies it; docs/testing.md says why).
COPY patches ./patches
# Production dependencies only; install scripts run only for the packages package.json's
# allowScripts approves (the two native addons), exactly as in CI.
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
COPY config ./config
COPY migrations ./migrations

# ---- runtime: slim, non-root, no compiler ----
FROM node:20-bookworm-slim
# espeak-ng: the local agent's spoken greeting (a chime without it).
RUN apt-get update \
 && apt-get install -y --no-install-recommends espeak-ng \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production \
    GATEWAY_CONFIG=/app/config/default.yaml \
    GW__RECORDS__PATH=/data/calls.sqlite \
    GW__RECORDS__RECORDINGS_DIR=/data/recordings
WORKDIR /app
COPY --from=build /app /app
RUN groupadd --system gateway && useradd --system --gid gateway --home /app gateway \
 && mkdir -p /data && chown gateway:gateway /data
USER gateway
VOLUME ["/data"]
# HTTP (webhooks, API), SIP, carrier RTP, WhatsApp WebRTC. Publish the RTP/WebRTC ranges 1:1 per
# instance: each gateway writes its own public address and these ports into its SDP.
EXPOSE 8080/tcp 5060/udp 5060/tcp 20000-20999/udp 30000-30999/udp
# Ready = listeners bound and not draining (a draining instance leaves the load balancer).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.GW__HTTP__PORT||8080)+'/readyz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node runs the TypeScript through tsx (a runtime dependency, as `npm start` does); SIGTERM drains.
CMD ["node", "--import", "tsx", "src/main.ts"]
