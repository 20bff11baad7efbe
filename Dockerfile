# syntax=docker/dockerfile:1
# ringway and ringway-load (the test backend the example manifests run) in one small image.
#
#   docker build -t ringway:0.1.0 .
#   docker run --rm -p 8080:8080 ringway:0.1.0 --upstream host.docker.internal:9000
#
# Build on Debian 12 and run on distroless Debian 12, so the binaries find the same glibc they
# were linked against; they need nothing else (libgcc_s, libc).

FROM rust:1.95-bookworm AS build
WORKDIR /src
# Only what the two packages need; tests, fuzz targets, docs and deploy/ stay out.
COPY Cargo.toml Cargo.lock ./
COPY src src
COPY loadtest loadtest
# Cargo.toml declares the criterion benches by path, and cargo checks those paths exist.
COPY bench bench
# The cache mounts keep the registry and incremental target between builds; the binaries are
# copied out of the mounted target so the next stage can see them. Debug info is stripped (the
# release profile keeps line tables for local profiling); symbols stay for readable backtraces.
#
# The proxy is built on its own, without default features: no `demo` subcommand, so none of
# ringway-load (test backend, DNS server, load generator, tokio's multi-thread runtime, serde)
# is linked into it. It must be its own cargo invocation: built together with ringway-load,
# cargo would unify tokio's features and pull its runtime back in.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ringway --no-default-features \
    && cargo build --release --locked -p ringway-load \
    && mkdir -p /out \
    && strip --strip-debug -o /out/ringway target/release/ringway \
    && strip --strip-debug -o /out/ringway-load target/release/ringway-load

# Distroless: no shell, no package manager; user 65532 (nonroot). Kubernetes can check
# runAsNonRoot against the numeric USER below.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ringway /out/ringway-load /usr/local/bin/
USER 65532:65532
# 8080: cleartext data (gRPC-Web over HTTP/1.1, h2c). 8443: TLS data, when --tls-listen is given
# (deploy/lb). 9901: admin (probes, stats); keep it inside the cluster.
EXPOSE 8080 8443 9901
ENTRYPOINT ["/usr/local/bin/ringway"]
CMD ["--listen=0.0.0.0:8080", "--admin=0.0.0.0:9901"]
