# agent-monitor image for the DaemonSet (deploy/kubernetes/30-daemonset.yaml).
#   docker build -t agent-monitor:0.1.0 .
#
# Stage 1 builds with the same recipe as a developer machine (README, "Requirements"):
# stable Rust for the daemon, nightly + rust-src for the kernel crate, bpf-linker built by
# `cargo xtask setup` against the LLVM inside nightly.
FROM rust:1.95-bookworm AS build
RUN rustup toolchain install nightly --profile minimal --component rust-src
WORKDIR /src
COPY . .
# setup: rust-src (present) and bpf-linker (built here, ~1 min); the tracefs/bpffs mounts
# fail harmlessly in a build container and the test tools are skipped.
RUN XTASK_SKIP_TEST_TOOLS=1 cargo xtask setup \
 && cargo build --release --locked --package agent-monitor --bin agent-monitor --features kubernetes \
 && cp target/release/agent-monitor /agent-monitor

# Stage 2: a small runtime. debian-slim rather than distroless because the DaemonSet
# needs nsenter (join the host cgroup namespace) and mount (bpffs/tracefs in the init
# container), both from util-linux/mount, which slim images carry. The binary is
# self-contained apart from glibc (TLS is rustls; no OpenSSL).
FROM debian:bookworm-slim
COPY --from=build /agent-monitor /usr/local/bin/agent-monitor
COPY deploy/config.yaml /etc/agent-monitor/config.yaml
COPY examples/scopes/ /etc/agent-monitor/scopes.d/
ENTRYPOINT ["/usr/local/bin/agent-monitor"]
CMD ["run", "--config", "/etc/agent-monitor/config.yaml", "--log-format", "json", "--quiet"]
