# syntax=docker/dockerfile:1
# One image with Ferry's binaries: /usr/local/bin/ferry-operator (the default
# entrypoint), /usr/local/bin/ferry-broker and /usr/local/bin/ferryctl; the Helm
# chart's Deployment and the operator's StatefulSets set the command they run.
# e2e/k8s/image builds the same layout without Docker. Build from the repository root:
#
#   docker build -t ferry:dev .
#
# The builder stage needs protoc: etcd-client compiles etcd's .proto files with it
# (Ferry's own protos are compiled by protox, in Rust).

FROM rust:1-bookworm AS builder
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler libprotobuf-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The caches keep the registry and the target directory between builds; the
# binaries are copied out of the cache mount, which does not outlive this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p ferry-broker -p ferry-operator -p ferry-client \
 && install -D -m 0755 target/release/ferry-broker /out/ferry-broker \
 && install -D -m 0755 target/release/ferry-operator /out/ferry-operator \
 && install -D -m 0755 target/release/ferryctl /out/ferryctl

# Distroless with glibc and libgcc (what Rust binaries link), CA certificates and
# a `nonroot` user 65532; no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
COPY --from=builder /out/ferry-broker /out/ferry-operator /out/ferryctl /usr/local/bin/
USER 65532:65532
# The broker's gRPC port and the metrics/health port (the operator's is 8080).
EXPOSE 7070 7071 8080
ENTRYPOINT ["/usr/local/bin/ferry-operator"]
