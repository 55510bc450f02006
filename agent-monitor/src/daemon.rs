//! `agent-monitor run`: wires loader, reader, pipeline, API and housekeeping together, and
//! takes them down in order on SIGINT/SIGTERM.

use std::{os::fd::AsFd as _, path::PathBuf, sync::Arc, time::Duration};

use anyhow::Context as _;
use serde::Deserialize;
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::watch,
};

use crate::{
    api,
    cli::{DEFAULT_SOCKET, RunArgs},
    control::dns,
    control::kubernetes,
    control::state::{DaemonConfig, Shared},
    kernel::loader,
    kernel::pins::Pins,
    kernel::reader,
    kernel::ring_fill::RingFill,
    observe::otlp,
    observe::sink::{Rotation, Sinks},
    pipeline::{Pipeline, writer::Writer},
};

/// `--config FILE`: defaults for the command-line options.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct ConfigFile {
    scopes: Option<PathBuf>,
    socket: Option<PathBuf>,
    audit_log: Option<PathBuf>,
    pin_path: Option<PathBuf>,
    cgroup_parent: Option<String>,
    ring_buffer_bytes: Option<u32>,
    state_file: Option<PathBuf>,
    socket_group: Option<String>,
    approver_group: Option<String>,
    audit_log_max_bytes: Option<u64>,
    audit_log_keep: Option<u32>,
    audit_format: Option<crate::observe::ocsf::AuditFormat>,
    /// Pod awareness (`select.kubernetes`); also on when `$NODE_NAME` is set.
    kubernetes: Option<kubernetes::KubernetesConfig>,
    /// DNS-name egress: upstream resolver, minimum TTL, answer to refused questions.
    dns_upstream: Option<String>,
    dns_min_ttl: Option<String>,
    dns_refuse: Option<dns::Refusal>,
    /// OpenTelemetry export (`--otlp-endpoint`, `--otlp-protocol`).
    otlp_endpoint: Option<String>,
    otlp_protocol: Option<otlp::Protocol>,
}

/// 4 MiB: about 6,500 file events, some 60 ms of a burst at 100k events/s. Events that carry
/// a verdict have their own ring, so a full one never weakens enforcement; the mapping
/// (twice the size: the kernel maps the data pages twice) counts in the daemon's RSS.
const DEFAULT_RING_BYTES: u32 = 1 << 22;

/// What `config` reads besides `DaemonConfig`.
struct RunOptions {
    ring_bytes: u32,
    serve: api::ServeOptions,
    rotation: Rotation,
    audit_format: crate::observe::ocsf::AuditFormat,
    kube: Option<kubernetes::Settings>,
    dns: dns::DnsSettings,
    /// `--otlp-endpoint` and `--otlp-protocol`, checked.
    otlp: Option<(String, otlp::Protocol)>,
}

/// `--dns-*` (flags win over the config file); the upstream defaults to the first
/// nameserver of /etc/resolv.conf.
fn dns_settings(args: &RunArgs, file: &ConfigFile) -> anyhow::Result<dns::DnsSettings> {
    let defaults = dns::DnsSettings::default();
    let upstream = match args.dns_upstream.as_ref().or(file.dns_upstream.as_ref()) {
        Some(text) => {
            Some(dns::parse_upstream(text).map_err(|e| anyhow::anyhow!("dns-upstream: {e}"))?)
        }
        None => dns::upstream_from_resolv_conf(std::path::Path::new("/etc/resolv.conf")),
    };
    let min_ttl = match args.dns_min_ttl.as_ref().or(file.dns_min_ttl.as_ref()) {
        Some(text) => crate::scope::Ttl::parse(text)
            .map_err(|e| anyhow::anyhow!("dns-min-ttl: {e}"))?
            .duration(),
        None => defaults.min_ttl,
    };
    Ok(dns::DnsSettings {
        upstream,
        min_ttl,
        refusal: args
            .dns_refuse
            .or(file.dns_refuse)
            .unwrap_or(defaults.refusal),
    })
}

/// `--otlp-*` (flags win over the config file); a bad endpoint fails the start here, before
/// anything is loaded.
fn otlp_endpoint(
    args: &RunArgs,
    file: &ConfigFile,
) -> anyhow::Result<Option<(String, otlp::Protocol)>> {
    let Some(endpoint) = args
        .otlp_endpoint
        .clone()
        .or_else(|| file.otlp_endpoint.clone())
    else {
        return Ok(None);
    };
    otlp::check(&endpoint)?;
    let protocol = args
        .otlp_protocol
        .or(file.otlp_protocol)
        .unwrap_or_default();
    Ok(Some((endpoint, protocol)))
}

/// What the OpenTelemetry exporter needs, when it is on.
fn otlp_settings(
    endpoint: Option<(String, otlp::Protocol)>,
    config: &DaemonConfig,
    rotation: Rotation,
    kube: Option<&kubernetes::Settings>,
) -> Option<otlp::Settings> {
    endpoint.map(|(endpoint, protocol)| otlp::Settings {
        endpoint,
        protocol,
        audit_log: config.audit_log.clone(),
        keep: rotation.keep,
        node_name: kube.map(|k| k.node().to_owned()),
    })
}

fn config(args: &RunArgs) -> anyhow::Result<(DaemonConfig, RunOptions)> {
    let file: ConfigFile = match &args.config {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?;
            serde_saphyr::from_str_with_options(&text, crate::scope::yaml_options())
                .with_context(|| format!("{}", path.display()))?
        }
        None => ConfigFile::default(),
    };
    let kube =
        kubernetes::Settings::resolve(file.kubernetes.as_ref(), std::env::var("NODE_NAME").ok())?;
    let dns = dns_settings(args, &file)?;
    let otlp = otlp_endpoint(args, &file)?;
    let pick = |flag: &Option<PathBuf>, file: &Option<PathBuf>, default: &str| {
        flag.clone()
            .or_else(|| file.clone())
            .unwrap_or_else(|| PathBuf::from(default))
    };
    let socket = pick(&args.socket, &file.socket, DEFAULT_SOCKET);
    let state_file = args
        .state_file
        .clone()
        .or(file.state_file)
        .unwrap_or_else(|| {
            socket
                .parent()
                .unwrap_or_else(|| std::path::Path::new("/run/agent-monitor"))
                .join("state.json")
        });
    Ok((
        DaemonConfig {
            scopes_dir: pick(&args.scopes, &file.scopes, "/etc/agent-monitor/scopes.d"),
            socket,
            pin_path: pick(&args.pin_path, &file.pin_path, "/sys/fs/bpf/agent-monitor"),
            state_file,
            audit_log: pick(
                &args.audit_log,
                &file.audit_log,
                "/var/log/agent-monitor/audit.jsonl",
            ),
            cgroup_parent: args
                .cgroup_parent
                .clone()
                .or(file.cgroup_parent)
                .unwrap_or_else(|| "agent-monitor".to_string()),
            fail_closed: args.fail_closed,
        },
        RunOptions {
            ring_bytes: args
                .ring_buffer_bytes
                .or(file.ring_buffer_bytes)
                .unwrap_or(DEFAULT_RING_BYTES),
            serve: api::ServeOptions {
                group: match args.socket_group.clone().or(file.socket_group) {
                    Some(name) => Some(
                        api::resolve_group(&name)
                            .with_context(|| format!("socket group {name:?} does not exist"))?,
                    ),
                    None => None,
                },
                approvers: match args.approver_group.clone().or(file.approver_group) {
                    Some(name) => Some(
                        api::resolve_group(&name)
                            .with_context(|| format!("approver group {name:?} does not exist"))?,
                    ),
                    None => None,
                },
            },
            rotation: Rotation {
                max_bytes: args
                    .audit_log_max_bytes
                    .or(file.audit_log_max_bytes)
                    .unwrap_or(Rotation::default().max_bytes),
                keep: args
                    .audit_log_keep
                    .or(file.audit_log_keep)
                    .unwrap_or(Rotation::default().keep),
            },
            audit_format: args.audit_format.or(file.audit_format).unwrap_or_default(),
            kube,
            dns,
            otlp,
        },
    ))
}

/// The environment check, then the configuration's own.
fn preflight(config: &DaemonConfig) -> anyhow::Result<crate::host::cgroupfs::Cgroup2> {
    let cgroup2 = loader::preflight()?;
    if !config.scopes_dir.is_dir() {
        anyhow::bail!(
            "scopes directory {} does not exist",
            config.scopes_dir.display()
        );
    }
    Ok(cgroup2)
}

fn log_attached(
    hooks: &[loader::HookStatus],
    cgroup2: &crate::host::cgroupfs::Cgroup2,
    adopted: bool,
    pins: &Pins,
) {
    if adopted {
        tracing::info!(pins = %pins.dir().display(), "adopted the pinned programs and maps of a previous run");
    }
    let attached = hooks.iter().filter(|h| h.attached).count();
    tracing::info!(attached, failed = hooks.len() - attached, cgroup2 = %cgroup2.root().display(), "hooks attached");
}

fn log_scopes(shared: &Shared) {
    let catalog = shared.catalog();
    tracing::info!(scopes = ?catalog.all().map(|s| s.name.as_str()).collect::<Vec<_>>(), rejected = catalog.problems().len(), "scopes loaded");
}

pub(crate) async fn run(args: RunArgs) -> anyhow::Result<()> {
    let (config, options) = config(&args)?;
    let kube = options.kube;
    let otlp = otlp_settings(options.otlp, &config, options.rotation, kube.as_ref());
    // A misconfigured API client fails the start, before anything is loaded.
    let kube_client = match &kube {
        Some(settings) => Some(settings.client().await?),
        None => None,
    };
    let cgroup2 = preflight(&config)?;
    let sinks = Sinks::open(&config.audit_log, args.stdout_format(), options.rotation)?
        .with_format(options.audit_format);
    loader::ensure_bpffs(&config.pin_path)?;
    let pins = Pins::new(&config.pin_path);
    let kernel = loader::adopt_or_load(&cgroup2, options.ring_bytes, &pins)?;
    let loader::Kernel {
        ebpf,
        rings,
        handles,
    } = kernel;
    // Held for the daemon's lifetime: an outside process removing pins detaches nothing.
    let pin_guard = crate::kernel::pins::PinGuard::hold(&pins);
    tracing::debug!(pins = pin_guard.len(), "pins held");
    log_attached(&handles.hooks, &cgroup2, ebpf.is_none(), &pins);
    // Every link and map is pinned (and held by `pin_guard`): the loader's copy of the
    // object, programs and BTF is no longer needed.
    drop(ebpf);
    let parent = format!("/{}", config.cgroup_parent.trim_matches('/'));
    cgroup2
        .create(&parent)
        .context("creating the task cgroup parent")?;
    let socket = config.socket.clone();
    let shared = shared_state(config, cgroup2, handles, options.dns);
    restore(&shared);
    log_scopes(&shared);
    pods_configured(&shared, kube.is_some());
    shared.discover_existing();
    observe_setup(&shared, &rings.events, options.ring_bytes);
    release_startup_memory();

    let (stop_tx, stop_rx) = watch::channel(false);
    let (writer, writer_thread) =
        Writer::spawn(Arc::clone(&shared), sinks).context("starting the audit log writer")?;
    let pipeline = Pipeline::new(Arc::clone(&shared), writer);
    let reader = spawn_reader(rings, pipeline, stop_rx.clone())?;
    let api = tokio::spawn({
        let shared = Arc::clone(&shared);
        let stop = stop_rx.clone();
        let serve = options.serve;
        async move { api::serve(shared, &socket, serve, stop).await }
    });
    let sweeper = tokio::spawn(sweep_loop(Arc::clone(&shared), pin_guard, stop_rx.clone()));
    let pods = match (kube, kube_client) {
        (Some(settings), Some(client)) => Some(tokio::spawn(kubernetes::watch::run(
            Arc::clone(&shared),
            client,
            settings,
            stop_rx.clone(),
        ))),
        _ => None,
    };
    let exporters = match otlp {
        Some(settings) => Vec::from(otlp::spawn(&shared, settings, &stop_rx)?),
        None => Vec::new(),
    };
    spawn_readiness(shared.config.socket.clone());
    tracing::info!(socket = %shared.config.socket.display(), "agent-monitor running");

    wait_for_signal(&shared).await?;
    tracing::info!("stopping");
    let _ = crate::host::systemd::notify("STOPPING=1");
    let _ = stop_tx.send(true);
    if let Some(pods) = pods {
        let _ = pods.await;
    }
    match api.await {
        Ok(Err(e)) => tracing::error!(error = %e, "status socket"),
        Err(e) => tracing::error!(error = %e, "status socket task"),
        Ok(Ok(())) => {}
    }
    let _ = sweeper.await;
    for e in exporters {
        let _ = e.await;
    }
    // Nothing left to watch: the syscall hooks go with this process.
    shared.release_idle_syscall_hooks();
    if args.release_on_exit {
        // No agent runs unwatched: end tasks while the programs are still attached, let the
        // reader record what they did last, then unpin so the hooks detach.
        let cleanup = Arc::clone(&shared);
        tokio::task::spawn_blocking(move || cleanup.shutdown())
            .await
            .context("shutdown")?;
        let _ = reader.await;
        finish_writing(writer_thread).await;
        pins.remove_all();
        let _ = std::fs::remove_file(&shared.config.state_file);
    } else {
        let _ = reader.await;
        finish_writing(writer_thread).await;
        tracing::info!(pins = %pins.dir().display(), "enforcement stays pinned until tasks end or a daemon runs with --release-on-exit");
    }
    Ok(())
}

/// The ring reader and the pipeline run on a thread of their own (with a single-threaded
/// runtime for the ring's readiness and the follow-up timer): what they do per event (the
/// /proc reads of path resolution, signals, kernel map writes) never takes one of the main
/// runtime's workers, and a busy API or DNS resolver never delays a verdict. The receiver
/// completes when the reader has stopped and flushed.
fn spawn_reader(
    rings: crate::kernel::maps::Rings,
    pipeline: Pipeline,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<tokio::sync::oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the ring reader's runtime")?;
    let (done_tx, done) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("ring-reader".into())
        .spawn(move || {
            runtime.block_on(reader::run(rings, pipeline, stop));
            let _ = done_tx.send(());
        })
        .context("starting the ring reader")?;
    Ok(done)
}

/// Waits (bounded) until the audit log has what the reader queued last.
async fn finish_writing(writer: crate::pipeline::writer::WriterThread) {
    let _ = tokio::task::spawn_blocking(move || writer.join()).await;
}

/// Loading parses the kernel's BTF and the eBPF object (megabytes, freed by now); give the
/// freed heap back to the system so that it does not stay in the daemon's RSS.
fn release_startup_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory at the top of glibc's heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The shared state, with the per-agent DNS resolvers and the task that records the
/// questions they refuse (it ends with the process).
fn shared_state(
    config: DaemonConfig,
    cgroup2: crate::host::cgroupfs::Cgroup2,
    handles: loader::Handles,
    dns: dns::DnsSettings,
) -> Arc<Shared> {
    if let Some(upstream) = dns.upstream {
        tracing::info!(%upstream, "agents' DNS questions go to this upstream");
    } else {
        tracing::warn!(
            "no DNS upstream (no --dns-upstream, no nameserver in /etc/resolv.conf): agents with host rules get SERVFAIL"
        );
    }
    let (out_of_scope_tx, out_of_scope_rx) = tokio::sync::mpsc::channel(dns::RECORD_QUEUE);
    let shared = Arc::new(Shared::new(config, cgroup2, handles, dns, out_of_scope_tx));
    tokio::spawn(dns::record::run(Arc::clone(&shared), out_of_scope_rx));
    shared
}

/// Pod awareness on (a node is configured), or a warning when a scope needs it.
fn pods_configured(shared: &Shared, on: bool) {
    if on {
        shared.kubernetes.enable();
    } else if shared.catalog().all().any(|s| s.kubernetes().is_some()) {
        tracing::warn!(
            "a scope selects Kubernetes containers, but no node is configured (kubernetes: in the config file, or $NODE_NAME): it selects nothing"
        );
    }
}

/// systemd (`Type=notify`): ready once the status socket answers. In its own task, so that
/// the signal handlers are in place at once.
fn spawn_readiness(socket: PathBuf) {
    tokio::spawn(async move {
        if let Err(e) =
            crate::host::systemd::ready_when_listening(&socket, Duration::from_secs(30)).await
        {
            tracing::error!(error = %e, "readiness");
        }
    });
}

/// What the API shows from the start: the records read back from the audit log, and the
/// ring buffer's fill level.
fn observe_setup(
    shared: &Shared,
    events: &aya::maps::RingBuf<aya::maps::MapData>,
    ring_bytes: u32,
) {
    let preloaded = shared.observed.feed.preload(&shared.config.audit_log);
    tracing::debug!(
        records = preloaded,
        "recent records read back from the audit log"
    );
    match RingFill::map(events.as_fd(), ring_bytes) {
        Ok(fill) => shared.observed.metrics.watch_ring(fill),
        Err(e) => tracing::warn!(error = %e, "ring buffer fill level will not be reported"),
    }
}

async fn wait_for_signal(shared: &Arc<Shared>) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing SIGHUP handler")?;
    loop {
        tokio::select! {
            _ = term.recv() => return Ok(()),
            _ = int.recv() => return Ok(()),
            _ = hup.recv() => {
                // Parsed off the runtime; the signals are still served meanwhile.
                let shared = Arc::clone(shared);
                tokio::spawn(async move {
                    match shared.reload().await {
                        Ok(changed) => tracing::info!(?changed, "scopes reloaded (SIGHUP)"),
                        Err(e) => tracing::error!(error = %e, "reloading the scopes (SIGHUP)"),
                    }
                });
            }
        }
    }
}

/// How long no agent must run before the syscall hooks are detached: a task that starts
/// right after another ended does not pay the attach again.
const HOOKS_LINGER: Duration = Duration::from_secs(2);

/// Takes over the tasks of the previous run; what it held for a decision is denied.
fn restore(shared: &Shared) {
    let restored = shared.restore();
    if restored > 0 {
        tracing::info!(tasks = restored, "tasks of the previous run restored");
        let denied = shared.deny_held_at_restart();
        if denied > 0 {
            tracing::warn!(
                denied,
                "operations held for a decision before the restart were denied"
            );
        }
    }
}

async fn sweep_loop(
    shared: Arc<Shared>,
    pin_guard: crate::kernel::pins::PinGuard,
    mut stop: watch::Receiver<bool>,
) {
    let pin_guard = Arc::new(pin_guard);
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                // Not awaited: a detach takes seconds (it returns at once while another runs).
                let s = Arc::clone(&shared);
                drop(tokio::task::spawn_blocking(move || {
                    s.detach_syscall_hooks_when_idle(HOOKS_LINGER);
                }));
                let s = Arc::clone(&shared);
                let guard = Arc::clone(&pin_guard);
                let _ = tokio::task::spawn_blocking(move || {
                    s.sweep();
                    s.dns.sweep();
                    let restored = guard.restore() + s.demand.restore();
                    if restored > 0 {
                        tracing::warn!(restored, "pins removed by another process were put back");
                    }
                }).await;
            }
            _ = stop.changed() => return,
        }
    }
}
