# syntax=docker/dockerfile:1
# twincert container image: a static-enough binary on distroless, non-root.
#
#   docker build -t ghcr.io/twincert/twincert:0.1.0 .
#
# Not built on the development machine (no Docker engine and no access to
# container registries there); see k8s/README.md. The built-in CA profiles
# (providers/ca/*.toml) are compiled into the binary, so nothing but the
# binary is copied into the runtime image.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# aws-lc-sys (rustls' crypto) builds its C code with the image's gcc; cmake is
# its fallback build system on targets its own builder does not cover.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake \
 && rm -rf /var/lib/apt/lists/*
# The whole workspace: Cargo.toml names tests/ and benches/ targets, which
# must exist even though only the binary is built. .dockerignore keeps
# target/, .git and local state out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin twincert \
 && install -D -m 0755 target/release/twincert /out/twincert

# cc: glibc and libgcc for the Rust binary, CA certificates for the CAs'
# HTTPS; :nonroot runs as uid/gid 65532 and has no shell.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/twincert /usr/local/bin/twincert
USER 65532:65532
# 8443: API, /healthz, /readyz, /metrics. 8080: HTTP-01 responder
# (server.http01_listen in the Kubernetes config; the default is port 80,
# which a non-root process cannot bind on every container runtime).
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/twincert"]
CMD ["serve", "--config", "/etc/twincert/twincert.toml"]
