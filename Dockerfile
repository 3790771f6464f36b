# syntax=docker/dockerfile:1
#
# payflow worker image: `docker build -t payflow .`
# The build context is the workspace root (see .dockerignore).

# ---- build ------------------------------------------------------------------
FROM rust:1.92-bookworm AS builder

# The Temporal SDK's build script runs protoc. Its vendored protos import
# google/protobuf/field_mask.proto, which ships in libprotobuf-dev (protoc finds
# it under /usr/include next to /usr/bin/protoc), not in protobuf-compiler.
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
ENV PROTOC=/usr/bin/protoc

WORKDIR /src
COPY . .

# Cache mounts keep the crate registry and target dir between builds; the binary
# is copied out of the cached target dir within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release -p payflow --locked \
 && install -D -m 0755 target/release/payflow /out/payflow

# ---- runtime ----------------------------------------------------------------
FROM debian:bookworm-slim

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*

RUN groupadd --system --gid 10001 payflow \
 && useradd --system --uid 10001 --gid payflow --home-dir /var/lib/payflow \
      --create-home --shell /usr/sbin/nologin payflow \
 && mkdir -p /etc/payflow

COPY --from=builder /out/payflow /usr/local/bin/payflow

USER 10001:10001
WORKDIR /var/lib/payflow

ENTRYPOINT ["payflow"]
CMD ["worker", "--config", "/etc/payflow/payflow.toml"]
