# syntax=docker/dockerfile:1
#
# One image recipe for every binary of the workspace. Pick one with its target:
#
#   docker build --target payment-service -t wxpay/payment-service .
#   docker build --target gateway         -t wxpay/gateway .
#   docker build --target poller          -t wxpay/poller .
#   docker build --target wechat-sandbox  -t wxpay/wechat-sandbox .
#   docker build --target console         -t wxpay/console .
#
# docker-compose.yml builds all five; the `builder` stage is shared, so the
# workspace compiles once for all of them.
#
# Dependency caching: cargo-chef turns the manifests and Cargo.lock into a
# "recipe" and compiles only the dependencies from it (the `cook` layer). That
# layer's cache key is the recipe, not the sources, so editing our own code
# rebuilds only our crates. No protoc and no OpenSSL are needed: the proto files
# compile in pure Rust (protox) and TLS is rustls.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Cook every workspace dependency in the release profile: a superset of what the
# four binaries link, so their build below finds all of it cached.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bins \
      -p payment-service -p gateway -p poller -p wechat-sandbox -p console

# The common runtime: glibc as in the builder, CA roots for HTTPS to WeChat's
# API, and an unprivileged user. bash stays (it is part of the base image):
# the compose health checks use its /dev/tcp, so no probe binary is added.
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin wxpay
# No .env in the image: configuration comes from the environment only.
WORKDIR /srv
USER 10001:10001
ENV LOG_FORMAT=json RUST_LOG=info

FROM runtime AS payment-service
COPY --from=builder /app/target/release/payment-service /usr/local/bin/payment-service
ENV PAYMENT_ADDR=0.0.0.0:50051
EXPOSE 50051
ENTRYPOINT ["/usr/local/bin/payment-service"]

FROM runtime AS gateway
COPY --from=builder /app/target/release/gateway /usr/local/bin/gateway
# Metrics on their own port, for a scraper inside the network; publish only 8080.
ENV GATEWAY_ADDR=0.0.0.0:8080 GATEWAY_METRICS_ADDR=0.0.0.0:9090
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/gateway"]

FROM runtime AS poller
COPY --from=builder /app/target/release/poller /usr/local/bin/poller
ENV POLLER_ADDR=0.0.0.0:50052 POLLER_METRICS_ADDR=0.0.0.0:9091
EXPOSE 50052 9091
ENTRYPOINT ["/usr/local/bin/poller"]

FROM runtime AS wechat-sandbox
COPY --from=builder /app/target/release/wechat-sandbox /usr/local/bin/wechat-sandbox
# The sandbox defaults to 127.0.0.1, unreachable from other containers.
ENV SANDBOX_ADDR=0.0.0.0:8090
EXPOSE 8090
ENTRYPOINT ["/usr/local/bin/wechat-sandbox"]

FROM runtime AS console
COPY --from=builder /app/target/release/console /usr/local/bin/console
# Internal only: compose publishes it on the host's loopback.
ENV CONSOLE_ADDR=0.0.0.0:8088
EXPOSE 8088
ENTRYPOINT ["/usr/local/bin/console"]
