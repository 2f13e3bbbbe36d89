# tickfan container image.
#
#   docker build -t tickfan --build-arg TICKFAN_GIT_COMMIT="$(git rev-parse HEAD)" .
#   docker run --rm -p 8080:8080 tickfan          # `demo`: page on :8080
#   docker run --rm tickfan edge --brokers kafka:9092 --topic ticks --page
#
# The binary writes nothing to disk: run it with a read-only root filesystem
# (`docker run --read-only`, compose `read_only: true`, Kubernetes
# `readOnlyRootFilesystem: true`).

# ---- builder ---------------------------------------------------------------
# rust:*-bookworm is buildpack-deps based: gcc, g++, make and perl are already
# there; cmake is added below. rdkafka-sys is built with the features
# cmake-build, ssl-vendored (OpenSSL compiled from source by openssl-src,
# which needs perl and make), zstd, libz-static and curl-static (libcurl, for
# OIDC OAUTHBEARER tokens), all compiled from bundled sources and linked
# statically. CMake rather than librdkafka's ./configure: ./configure cannot
# find the static libcurl (OIDC would be missing), and only the CMake build
# marks OpenSSL as static, which makes librdkafka probe the usual CA bundle
# paths itself (the distroless image has /etc/ssl/certs/ca-certificates.crt),
# so public-CA brokers verify without --kafka-ca. tikv-jemalloc-sys builds
# jemalloc with make.
FROM rust:1.95-bookworm AS builder

RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /build

# Link zlib statically (libz-sys builds its bundled copy), so the binary needs
# only glibc and libgcc_s, which the distroless cc image provides.
ENV LIBZ_SYS_STATIC=1 \
    CARGO_TERM_COLOR=never

# 1) Dependencies only, against stub sources: this layer is rebuilt only when
#    Cargo.toml, Cargo.lock or build.rs change. (The [[bench]] target must
#    exist for the manifest to load.)
COPY Cargo.toml Cargo.lock build.rs ./
RUN mkdir -p src/bin benches \
    && echo 'fn main() {}' > src/bin/tickfan.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hot_path.rs \
    && cargo build --release --locked --bin tickfan \
    && rm -rf src benches

# 2) The crate itself. README.md, schemas/ and static/ are include_str!'d.
#    The context has no .git, so build.rs takes the commit for
#    `tickfan --version` from TICKFAN_GIT_COMMIT (the build argument; without
#    it the binary says "unknown"). Declared here, so a new commit does not
#    rebuild the dependency layer above.
ARG TICKFAN_GIT_COMMIT=""
COPY README.md ./
COPY schemas ./schemas
COPY static ./static
COPY benches ./benches
COPY src ./src
# COPY keeps the context's mtimes, which may be older than the stubs': touch
# so cargo rebuilds the crate rather than reuse the stub artifacts.
RUN touch src/lib.rs src/bin/tickfan.rs \
    && cargo build --release --locked --bin tickfan \
    && strip --strip-debug target/release/tickfan \
    && install -D -m 0755 target/release/tickfan /out/tickfan \
    && ./target/release/tickfan --version

# Static busybox (musl build) for container healthchecks only: the runtime
# image has no shell or curl. compose/docker-compose.yml runs
#   /usr/local/bin/busybox wget -q -O /dev/null http://127.0.0.1:8080/readyz
FROM busybox:1.37.0-musl AS busybox

# ---- runtime ---------------------------------------------------------------
# distroless cc: glibc, libgcc_s, CA certificates and tzdata, no shell, no
# package manager; the :nonroot variant runs as uid/gid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot

# The version is Cargo.toml's (tests/release.rs fails when they differ); the
# revision is the build argument above, empty without it.
ARG TICKFAN_GIT_COMMIT=""
LABEL org.opencontainers.image.title="tickfan" \
      org.opencontainers.image.description="Kafka-backed WebSocket fan-out for high-volume market data" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="0.2.0" \
      org.opencontainers.image.revision="${TICKFAN_GIT_COMMIT}" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"

COPY --from=builder /out/tickfan /usr/local/bin/tickfan
COPY LICENSE /usr/share/doc/tickfan/LICENSE
COPY --from=busybox /bin/busybox /usr/local/bin/busybox

USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/tickfan"]
CMD ["demo", "--listen", "0.0.0.0:8080"]
