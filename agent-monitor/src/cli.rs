//! Command-line interface.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::observe::sink::StdoutFormat;

pub(crate) const DEFAULT_SOCKET: &str = "/run/agent-monitor/agent-monitor.sock";

#[derive(Debug, Parser)]
#[command(
    name = "agent-monitor",
    version,
    about = "eBPF runtime monitor for AI-agent processes"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the privileged daemon (foreground).
    Run(RunArgs),
    /// Run CMD as a new agent task under a scope, and exit with its status.
    Exec(ExecArgs),
    /// Run a stdio MCP server as a task between an MCP client (stdin/stdout) and the server:
    /// each tool call runs under the tool's scope (`spec.tools`), unlisted tools are refused.
    Mcp(McpArgs),
    /// Show the daemon's status and coverage.
    Status(ClientArgs),
    /// List agent tasks.
    Agents(ClientArgs),
    /// Show records: the recent ones, or follow new ones as they are written.
    Events(EventsArgs),
    /// List operations held for a decision (`onViolation: ask`).
    Holds(HoldsArgs),
    /// Approve a held operation: the process goes on.
    Approve(ApproveArgs),
    /// Deny a held operation: the process is killed.
    Deny(DenyArgs),
    /// Declared scope vs what a task actually used (entries never used, for access reviews).
    Report(ReportArgs),
    /// Validate scope manifests offline (no root, no daemon): every error of each file, and
    /// warnings for rules that are valid but risky.
    Check(CheckArgs),
    /// Scope lifecycle: propose a scope from recorded activity, replay a candidate against
    /// recorded activity, say what a change widens (offline unless `propose --task`).
    #[command(subcommand)]
    Scope(ScopeCommand),
    /// Development: the userspace pipeline's capacity on synthetic ring-buffer events
    /// (`cargo xtask bench`; root, attaches nothing).
    #[command(hide = true)]
    BenchPipeline(BenchPipelineArgs),
    /// Development: run a command under the Landlock layer `exec` gives an agent of a scope,
    /// with no daemon, no eBPF and no seccomp filter (`cargo xtask bench`: what Landlock
    /// itself costs).
    #[command(hide = true)]
    BenchLandlock(BenchLandlockArgs),
    /// Print the `AgentScope` CRDs generated from the manifest types
    /// (deploy/kubernetes/05-crd.yaml), or the manifests the daemon reads from objects.
    #[command(hide = true)]
    Crd(CrdArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CrdArgs {
    /// Objects as `kubectl get -o yaml` prints them (`-`: standard input): print the
    /// manifest the daemon reads from each, where an `Invalid` condition's line counts.
    #[arg(long, value_name = "FILE")]
    pub(crate) render: Option<PathBuf>,
}

/// The event kinds `bench-pipeline` feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum BenchKind {
    /// An open (read) of an absolute path.
    File,
    /// An exec of an allowed binary.
    Exec,
    /// A UDP connect to an allowed address and port.
    Net,
}

#[derive(Debug, Args)]
pub(crate) struct BenchPipelineArgs {
    #[arg(long, value_enum)]
    pub(crate) kind: BenchKind,
    /// Events timed (after as many again, at most 20,000, not timed).
    #[arg(long, default_value_t = 200_000)]
    pub(crate) events: u64,
    /// Where the records are written.
    #[arg(long, default_value = "/dev/null")]
    pub(crate) audit_log: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct BenchLandlockArgs {
    /// A manifest with one enforced scope.
    #[arg(long)]
    pub(crate) scope: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub(crate) command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    /// YAML file with defaults for the options below (command-line flags win).
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Directory of scope manifests.
    #[arg(long)]
    pub(crate) scopes: Option<PathBuf>,
    #[arg(long, env = "AGENT_MONITOR_SOCKET")]
    pub(crate) socket: Option<PathBuf>,
    #[arg(long)]
    pub(crate) audit_log: Option<PathBuf>,
    /// bpffs directory for pinned state.
    #[arg(long)]
    pub(crate) pin_path: Option<PathBuf>,
    /// Parent of task cgroups, relative to the cgroup2 root.
    #[arg(long)]
    pub(crate) cgroup_parent: Option<String>,
    /// Logs (stderr) and records on stdout: `text` prints one line per record, `json` one
    /// JSON object per line.
    #[arg(long, value_enum, default_value = "text")]
    pub(crate) log_format: LogFormat,
    /// Do not print records on stdout (the audit log still gets them).
    #[arg(long)]
    pub(crate) quiet: bool,
    /// On a clean exit, kill the tasks and detach every hook. Without it, enforcement stays
    /// pinned (and tasks keep running) until a daemon adopts it or the tasks end.
    #[arg(long)]
    pub(crate) release_on_exit: bool,
    /// Where the task registry is saved for a restarted daemon (default: next to the socket).
    #[arg(long)]
    pub(crate) state_file: Option<PathBuf>,
    /// Kill an enforced agent as soon as any of its events is lost (ring buffer full).
    #[arg(long)]
    pub(crate) fail_closed: bool,
    /// Ring buffer size in bytes (a power of two, multiple of the page size; default 4 MiB).
    #[arg(long)]
    pub(crate) ring_buffer_bytes: Option<u32>,
    /// Group (name or gid) whose members may use the status socket besides root.
    #[arg(long)]
    pub(crate) socket_group: Option<String>,
    /// Group (name or gid) whose members may approve and deny held operations
    /// (`onViolation: ask`) besides root; they must also be able to use the socket.
    #[arg(long)]
    pub(crate) approver_group: Option<String>,
    /// Rotate the audit log before it grows past this many bytes (0: never).
    #[arg(long)]
    pub(crate) audit_log_max_bytes: Option<u64>,
    /// Rotated audit log files kept (`audit.jsonl.1` .. `.N`).
    #[arg(long)]
    pub(crate) audit_log_keep: Option<u32>,
    /// Records in the audit log and on stdout (`--log-format json`): agent-monitor's own
    /// JSON (default) or OCSF events (docs/API.md "OCSF").
    #[arg(long, value_enum)]
    pub(crate) audit_format: Option<crate::observe::ocsf::AuditFormat>,
    /// Where agents' allowed DNS questions are forwarded (ADDR or ADDR:PORT; default: the
    /// first nameserver of /etc/resolv.conf).
    #[arg(long)]
    pub(crate) dns_upstream: Option<String>,
    /// An address an agent learned stays reachable at least this long, whatever the
    /// answer's TTL (e.g. 5s, the default).
    #[arg(long)]
    pub(crate) dns_min_ttl: Option<String>,
    /// How a question outside the agent's host rules is answered in enforce mode.
    #[arg(long, value_enum)]
    pub(crate) dns_refuse: Option<crate::control::dns::Refusal>,
    /// Send every audit-log record and the metrics to this OpenTelemetry collector
    /// (`http://HOST:PORT`; plaintext, no TLS).
    #[arg(long)]
    pub(crate) otlp_endpoint: Option<String>,
    /// OTLP transport: `grpc` (default) or `http` (HTTP/protobuf to <endpoint>/v1/logs and
    /// /v1/metrics).
    #[arg(long, value_enum)]
    pub(crate) otlp_protocol: Option<crate::observe::otlp::Protocol>,
}

impl RunArgs {
    pub(crate) fn stdout_format(&self) -> StdoutFormat {
        match (self.quiet, self.log_format) {
            (true, _) => StdoutFormat::None,
            (false, LogFormat::Text) => StdoutFormat::Text,
            (false, LogFormat::Json) => StdoutFormat::Json,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ClientArgs {
    #[arg(long, env = "AGENT_MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct HoldsArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// Keep listing (every second) until interrupted.
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The request's id (`holds`).
    pub(crate) id: u64,
    /// Also add this exact entry to the task's scope until the task ends.
    #[arg(long)]
    pub(crate) for_task: bool,
    /// Why, kept in the record.
    #[arg(long)]
    pub(crate) note: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DenyArgs {
    #[command(flatten)]
    pub(crate) client: ClientArgs,
    /// The request's id (`holds`).
    pub(crate) id: u64,
    /// Why, kept in the record.
    #[arg(long)]
    pub(crate) note: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct EventsArgs {
    #[arg(long, env = "AGENT_MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    /// Keep streaming new records until interrupted (reconnects when the daemon restarts).
    #[arg(long, short = 'f')]
    pub(crate) follow: bool,
    /// Only violations.
    #[arg(long)]
    pub(crate) violations: bool,
    /// Only this task's records.
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// At most this many recent records (without --follow).
    #[arg(long)]
    pub(crate) limit: Option<usize>,
    /// One JSON record per line, as in an audit log written with `--audit-format json`
    /// (the same as `--format json`).
    #[arg(long, conflicts_with = "format")]
    pub(crate) json: bool,
    /// `text` (default: one line for humans), `json` (agent-monitor's records) or `ocsf`
    /// (one OCSF event per line).
    #[arg(long, value_enum)]
    pub(crate) format: Option<EventsFormat>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum EventsFormat {
    Text,
    Json,
    Ocsf,
}

impl EventsArgs {
    pub(crate) fn format(&self) -> EventsFormat {
        match (self.json, self.format) {
            (_, Some(f)) => f,
            (true, None) => EventsFormat::Json,
            (false, None) => EventsFormat::Text,
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    #[arg(long, env = "AGENT_MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    /// The task (running, or ended recently).
    #[arg(long)]
    pub(crate) task: String,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[arg(required = true)]
    pub(crate) files: Vec<PathBuf>,
    /// Warnings fail the check too (exit 1).
    #[arg(long)]
    pub(crate) strict: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum ScopeCommand {
    /// Propose the least scope that covers what a task did (a running or ended task, or
    /// recorded runs from audit logs), as `AgentScope` YAML.
    Propose(ProposeArgs),
    /// Judge recorded activity against a candidate scope; exits 1 when anything would be
    /// a violation.
    Replay(ReplayArgs),
    /// What a scope change widens and narrows, per dimension. Exit code: 0 when nothing
    /// widens, 1 when anything widens (a review gate), 2 when a file cannot be read or
    /// parsed.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub(crate) struct ProposeArgs {
    /// Ask the daemon for this task's records (running, or ended recently).
    #[arg(long, conflicts_with = "from_log")]
    pub(crate) task: Option<String>,
    /// Read these audit logs (rotated files too) instead of asking the daemon.
    #[arg(long, num_args = 1.., required_unless_present = "task")]
    pub(crate) from_log: Vec<PathBuf>,
    /// With `--from-log`: the scope whose runs are learned from (their union).
    #[arg(long, requires = "from_log")]
    pub(crate) scope: Option<String>,
    /// The proposed scope's name (default: the learned scope's).
    #[arg(long)]
    pub(crate) name: Option<String>,
    /// The proposed scope's owner (default: the learned task's).
    #[arg(long)]
    pub(crate) owner: Option<String>,
    /// Paths never proposed (globs, as in `files.deny`); they become the proposal's deny list.
    #[arg(long)]
    pub(crate) deny: Vec<String>,
    /// Write the YAML here instead of stdout.
    #[arg(long)]
    pub(crate) out: Option<PathBuf>,
    #[arg(long, env = "AGENT_MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The candidate manifest (one scope, or pick one with `--scope`).
    pub(crate) candidate: PathBuf,
    /// Audit logs to replay, oldest first.
    #[arg(long, num_args = 1.., required = true)]
    pub(crate) log: Vec<PathBuf>,
    /// Replay the records of this scope (default: the candidate's name).
    #[arg(long)]
    pub(crate) scope: Option<String>,
    /// Replay only this task's records.
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    pub(crate) old: PathBuf,
    pub(crate) new: PathBuf,
    /// Machine-readable output.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    /// A loaded scope's name, or a manifest file (an ad-hoc scope for this task only). With
    /// `--call`: the call's scope, which must be a subset of the task's (default: the task's).
    #[arg(
        long,
        required_unless_present_any = ["learn", "call"],
        conflicts_with = "learn"
    )]
    pub(crate) scope: Option<String>,
    /// Run CMD as a call NAME of the running task `--task` (a tool that is a process): in a
    /// child cgroup of the task, bound by `--scope` (a subset of the task's scope, proven by
    /// the daemon), every record carrying `call: {id, name}`.
    #[arg(long, value_name = "NAME", requires = "task", conflicts_with = "learn")]
    pub(crate) call: Option<String>,
    /// Learn a scope: run CMD recorded and never stopped (audit mode, nothing allowed
    /// beyond the baseline), then write the proposed scope NAME for what it did.
    #[arg(long, value_name = "NAME")]
    pub(crate) learn: Option<String>,
    /// With `--learn`: the proposed scope's owner (default: the invoking user).
    #[arg(long, requires = "learn")]
    pub(crate) owner: Option<String>,
    /// With `--learn`: where the proposal is written (default: stdout, after CMD's output).
    #[arg(long, requires = "learn")]
    pub(crate) out: Option<PathBuf>,
    /// With `--learn`: paths never proposed (globs).
    #[arg(long, requires = "learn")]
    pub(crate) deny: Vec<String>,
    /// Task id (default: <scope>-<random>).
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Revoke the task after this long (e.g. 30m).
    #[arg(long)]
    pub(crate) ttl: Option<String>,
    #[arg(long, env = "AGENT_MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub(crate) cmd: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct McpArgs {
    /// A loaded scope's name, or a manifest file; its `spec.tools` bind each tool call.
    #[arg(long)]
    pub(crate) scope: String,
    /// Task id (default: <scope>-<random>).
    #[arg(long)]
    pub(crate) task: Option<String>,
    /// Revoke the task after this long (e.g. 30m).
    #[arg(long)]
    pub(crate) ttl: Option<String>,
    #[arg(long, env = "AGENT_MONITOR_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
    /// The server's command and its arguments.
    #[arg(last = true, required = true)]
    pub(crate) cmd: Vec<String>,
}
