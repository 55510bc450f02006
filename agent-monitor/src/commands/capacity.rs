//! `agent-monitor bench-pipeline` (hidden, for `cargo xtask bench`): the userspace
//! pipeline's own capacity, without the kernel or a load generator in the way.
//!
//! Builds ring-buffer records in memory, byte for byte what the kernel programs write (the
//! wire structs of `agent-monitor-common`), and hands each to the reader's own
//! [`reader::handle`]: decoder, process table, path resolution, policy, record, and the
//! audit log's writer thread, which formats the JSON lines and publishes them to the feed,
//! the usage and the metrics, as in the daemon. Nothing is attached: the eBPF object is
//! loaded only so that its maps exist for the daemon's shared state (the enforcement and
//! tag maps the pipeline would write; an audit scope with every event in it writes none).
//!
//! Every event is of one process (this one, so that its /proc entries are real) of one
//! task in an audit scope that allows it: one record per event, no violation, no signal.
//! The figure is events per second of CPU time of the whole process (the pipeline's thread
//! and the writer's), i.e. per core; the pipeline's thread alone is reported too.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::{Arc, atomic::Ordering},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::json;

use crate::{
    cli::{BenchKind, BenchPipelineArgs},
    control::{
        state::{DaemonConfig, Shared},
        tasks::{Origin, Task},
    },
    host::cgroupfs::Cgroup2,
    kernel::{
        decoder::decode,
        loader::{Handles, LoadError},
        maps::Maps,
        reader::{Consumer as _, handle},
    },
    observe::sink::{Rotation, Sinks, StdoutFormat},
    pipeline::{Pipeline, writer::Writer},
};

mod wire;

use wire::{FILES, SCOPE};

/// Records read from the ring per drain before the reader flushes (`pipeline::BATCH`).
const DRAIN: usize = 1024;
/// Records handed to the writer and not yet counted as written, at most. The writer counts
/// a batch as written before it leaves its queue (it is published in between), so its queue
/// holds up to twice this (plus a drain each time): under its bound
/// (`writer::QUEUE_RECORDS`, 16 Ki), so that no record is dropped and every one is formatted.
const IN_FLIGHT: u64 = 4 * 1024;
/// Untimed events first (process table, caches, allocator), at most.
const WARMUP: u64 = 20_000;

/// What one run measured.
#[derive(Debug, Clone, Copy)]
struct Measured {
    wall: Duration,
    /// CPU time of the whole process, and of the thread that ran the pipeline.
    cpu: Duration,
    pipeline_cpu: Duration,
    records: u64,
}

pub(crate) fn run(args: &BenchPipelineArgs) -> anyhow::Result<()> {
    if args.events == 0 {
        bail!("--events must be at least 1");
    }
    let dir = Scratch::new()?;
    let mut bench = Bench::start(&dir.path, &args.audit_log)?;
    let events = wire::synthetic(args.kind, &dir.path, bench.slot, bench.cgroup_id)?;
    let decode_only = time_decode(&events, args.events);
    let warmup = args.events.min(WARMUP);
    bench.feed(&events, warmup)?;
    let m = bench.feed(&events, args.events)?;
    let secs = |d: Duration| d.as_secs_f64().max(1e-9);
    #[expect(clippy::cast_precision_loss, reason = "a rate, not a count")]
    let per = |d: Duration| args.events as f64 / secs(d);
    let stats = &bench.shared.stats;
    let out = json!({
        "kind": kind_name(args.kind),
        "events": args.events,
        "records": m.records,
        "wall_secs": secs(m.wall),
        "cpu_secs": secs(m.cpu),
        "pipeline_cpu_secs": secs(m.pipeline_cpu),
        // Per core: all the process's CPU time (pipeline thread and writer thread).
        "events_per_cpu_sec": per(m.cpu),
        "pipeline_events_per_cpu_sec": per(m.pipeline_cpu),
        "events_per_wall_sec": per(m.wall),
        "decode_only_per_sec": decode_only,
        "violations": stats.violations.load(Ordering::Relaxed),
        "orphans": stats.orphan_events.load(Ordering::Relaxed),
        "decode_errors": stats.decode_errors.load(Ordering::Relaxed),
        "records_dropped": stats.audit_records_dropped.load(Ordering::Relaxed),
    });
    println!("{out}");
    Ok(())
}

fn kind_name(kind: BenchKind) -> &'static str {
    match kind {
        BenchKind::File => "file",
        BenchKind::Exec => "exec",
        BenchKind::Net => "net",
    }
}

/// The daemon's state with one task, and the pipeline that judges its events.
struct Bench {
    shared: Arc<Shared>,
    /// The task's slot and cgroup, as the kernel puts them in each header.
    slot: u32,
    cgroup_id: u64,
    pipeline: Pipeline,
    /// Owns the maps' object (no program of it is loaded).
    _ebpf: aya::Ebpf,
    /// The resolver's queue of refusals: nothing is sent in audit mode, but it must stay
    /// open.
    _out_of_scope: tokio::sync::mpsc::Receiver<crate::control::dns::OutOfScope>,
}

impl Bench {
    fn start(dir: &Path, audit_log: &Path) -> anyhow::Result<Self> {
        let cgroup2 = Cgroup2::discover().context("finding the cgroup2 mount")?;
        // The maps only: `load` creates them; programs are loaded into the kernel only
        // by `Program::load`, which is never called here, and nothing is attached.
        let mut ebpf = aya::EbpfLoader::new()
            .load(crate::kernel::ebpf_object::OBJECT)
            .context("creating the eBPF object's maps (root is needed)")?;
        let maps = Maps::open(|name| ebpf.take_map(name).ok_or(LoadError::MissingMap(name)))?;
        let handles = Handles {
            maps: maps.state,
            enforce: maps.enforce,
            hooks: Vec::new(),
            demand: crate::kernel::demand::OnDemand::disabled(),
            identity_error: None,
        };
        let config = DaemonConfig {
            scopes_dir: dir.join("scopes"),
            socket: dir.join("unused.sock"),
            audit_log: audit_log.to_path_buf(),
            cgroup_parent: "agent-monitor-capacity".into(),
            fail_closed: false,
            state_file: dir.join("state.json"),
            pin_path: dir.join("unused-pins"),
        };
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let shared = Arc::new(Shared::new(
            config,
            cgroup2,
            handles,
            crate::control::dns::DnsSettings::default(),
            tx,
        ));
        // The task is this process's own cgroup, registered as `exec` would register it,
        // without creating or tagging a cgroup.
        let cgroup =
            Cgroup2::of_pid(std::process::id()).context("reading this process's cgroup")?;
        let cgroup_id = shared.cgroup2.id(&cgroup)?;
        let scope = shared
            .scope_named(SCOPE)
            .context("the benchmark's scope did not load")?;
        let slot = {
            let mut registry = shared.registry();
            let slot = registry.allocate_slot();
            let mut task = Task::new(
                "capacity-bench".into(),
                slot,
                scope,
                cgroup,
                cgroup_id,
                Origin::Exec,
                None,
            );
            task.start_cwd = Some(dir.to_path_buf());
            registry.insert(task);
            slot
        };
        let sinks = Sinks::open(
            audit_log,
            StdoutFormat::None,
            Rotation {
                max_bytes: 0,
                keep: 0,
            },
        )?;
        // The writer thread is left to end with the process.
        let (writer, _thread) = Writer::spawn(Arc::clone(&shared), sinks)?;
        Ok(Self {
            pipeline: Pipeline::new(Arc::clone(&shared), writer),
            shared,
            slot,
            cgroup_id,
            _ebpf: ebpf,
            _out_of_scope: rx,
        })
    }

    /// Feeds `n` events (cycling through `events`) as the reader would, in drains of
    /// [`DRAIN`], and waits until the writer has written every record.
    fn feed(&mut self, events: &[Vec<u8>], n: u64) -> anyhow::Result<Measured> {
        let records = || self.shared.stats.records.load(Ordering::Acquire);
        let start_records = records();
        let (wall, cpu, thread_cpu) = (Instant::now(), cpu_time(PROCESS), cpu_time(THREAD));
        let mut fed = 0u64;
        for item in events.iter().cycle().take(usize::try_from(n)?) {
            handle(decode(item), &mut self.pipeline);
            fed += 1;
            if fed.is_multiple_of(DRAIN as u64) {
                self.pipeline.flush();
                // The writer's queue is bounded: a record that does not fit is dropped, and
                // would not be formatted. Waiting (asleep) costs no CPU time.
                while fed - (records() - start_records) > IN_FLIGHT {
                    thread::sleep(Duration::from_micros(50));
                }
            }
        }
        self.pipeline.flush();
        let pipeline_cpu = cpu_time(THREAD).saturating_sub(thread_cpu);
        let deadline = Instant::now() + Duration::from_secs(30);
        while records() - start_records < n {
            if Instant::now() > deadline {
                bail!(
                    "{} of {n} records written after 30 s (dropped: {}, orphans: {})",
                    records() - start_records,
                    self.shared
                        .stats
                        .audit_records_dropped
                        .load(Ordering::Relaxed),
                    self.shared.stats.orphan_events.load(Ordering::Relaxed),
                );
            }
            thread::sleep(Duration::from_micros(50));
        }
        Ok(Measured {
            wall: wall.elapsed(),
            cpu: cpu_time(PROCESS).saturating_sub(cpu),
            pipeline_cpu,
            records: records() - start_records,
        })
    }
}

/// Decodes `n` records (cycling) and nothing else: the decoder's share.
fn time_decode(events: &[Vec<u8>], n: u64) -> f64 {
    let started = cpu_time(THREAD);
    let mut ok = 0u64;
    for item in events
        .iter()
        .cycle()
        .take(usize::try_from(n).unwrap_or(usize::MAX))
    {
        ok += u64::from(std::hint::black_box(decode(item)).is_ok());
    }
    #[expect(clippy::cast_precision_loss, reason = "a rate, not a count")]
    let rate = ok as f64
        / cpu_time(THREAD)
            .saturating_sub(started)
            .as_secs_f64()
            .max(1e-9);
    rate
}

const PROCESS: libc::clockid_t = libc::CLOCK_PROCESS_CPUTIME_ID;
const THREAD: libc::clockid_t = libc::CLOCK_THREAD_CPUTIME_ID;

fn cpu_time(clock: libc::clockid_t) -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and out-pointer.
    unsafe { libc::clock_gettime(clock, &raw mut ts) };
    Duration::new(
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u32::try_from(ts.tv_nsec).unwrap_or(0),
    )
}

/// A directory of this run: the scope, the files the opens name, the state file.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn new() -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!("am-capacity-{}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        let data = path.join("data");
        let scopes = path.join("scopes");
        for d in [&data, &scopes] {
            fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        for i in 0..FILES {
            let f = data.join(format!("f{i}"));
            fs::write(&f, "capacity\n").with_context(|| format!("writing {}", f.display()))?;
        }
        let exe = std::env::current_exe().context("this binary's path")?;
        fs::write(
            scopes.join(format!("{SCOPE}.yaml")),
            wire::scope_yaml(&fs::canonicalize(&path)?, &exe),
        )
        .context("writing the scope")?;
        Ok(Self { path })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
