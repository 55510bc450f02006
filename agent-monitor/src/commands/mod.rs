//! The client commands: exec and check here; status and agents in `view`, events and
//! report in `events`.

pub(crate) mod capacity;
mod check;
mod events;
pub(crate) mod holds;
pub(crate) mod landlock_only;
mod mcp;
pub(crate) mod scope;
mod view;

pub(crate) use check::check;

pub(crate) use events::{events, report};
pub(crate) use mcp::mcp;
pub(crate) use view::{agents, status};

use std::{
    ffi::CString,
    os::unix::{
        ffi::OsStrExt as _,
        process::{CommandExt as _, ExitStatusExt as _},
    },
    path::Path,
};

use anyhow::Context as _;
use hyper::Method;
use serde_json::{Value, json};
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    api::client::{Client, Retry},
    cli::ExecArgs,
    control::state::TaskCreated,
};

/// `agent-monitor exec`: asks the daemon for a task, runs CMD inside its cgroup and exits
/// with CMD's status. This process stays outside the task (so that it can report what
/// happened to it) and forwards SIGINT/SIGTERM/SIGHUP to CMD.
pub(crate) async fn exec(args: ExecArgs) -> anyhow::Result<i32> {
    let client = Client::new(&args.socket);
    // The daemon answers an enforced scope with the Landlock rules this kernel can apply.
    let landlock_abi = crate::control::landlock::abi();
    let (path, body) = match (&args.call, &args.task) {
        (Some(name), Some(task)) => (
            format!("/v1/tasks/{task}/calls"),
            call_request(&args, name, landlock_abi)?,
        ),
        _ => ("/v1/tasks".to_owned(), task_request(&args, landlock_abi)?),
    };
    // A daemon that is busy (503) or restarting (nobody listens yet) is asked again, with
    // backoff, for a few seconds; a 4xx is final.
    let answer = client
        .send_retrying(&Method::POST, &path, Some(&body), &Retry::EXEC)
        .await?;
    let created: TaskCreated =
        serde_json::from_slice(&answer).context("unexpected answer from the daemon")?;
    let mut cmd = std::process::Command::new(&args.cmd[0]);
    cmd.args(&args.cmd[1..]);
    let ruleset = confine(&mut cmd, &created)?;
    let mut child = match tokio::process::Command::from(cmd).spawn() {
        Ok(child) => child,
        Err(e) if e.raw_os_error() == Some(libc::EACCES) && ruleset.is_some() => {
            eprintln!(
                "agent-monitor: {} refused in task {}: the scope does not let it run \
                 (exec.allow, refused by Landlock before it started)",
                args.cmd[0], created.task
            );
            return Ok(126);
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("starting {} in task {}", args.cmd[0], created.task));
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok());
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let status = loop {
        let sig = tokio::select! {
            status = child.wait() => break status.context("waiting for the command")?,
            _ = term.recv() => libc::SIGTERM,
            _ = int.recv() => libc::SIGINT,
            _ = hup.recv() => libc::SIGHUP,
        };
        if let Some(pid) = pid {
            // SAFETY: plain kill(2) of our own child.
            unsafe { libc::kill(pid, sig) };
        }
    };
    let code = match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(libc::SIGKILL)) => {
            eprintln!(
                "agent-monitor: {}",
                why_killed(&client, &created.task).await
            );
            137
        }
        (None, Some(sig)) => 128 + sig,
        (None, None) => 1,
    };
    if args.learn.is_some() {
        learned(&client, &args, &created.task).await?;
    }
    Ok(code)
}

/// Makes `cmd` start inside the task `created` describes: moved into its cgroup before it
/// execs, under the seccomp filter and (for an enforced scope) the Landlock layer. The
/// returned ruleset must be kept until `cmd` is spawned.
fn confine(
    cmd: &mut std::process::Command,
    created: &TaskCreated,
) -> anyhow::Result<Option<std::os::fd::OwnedFd>> {
    let procs = CString::new(
        created
            .cgroup_dir
            .join("cgroup.procs")
            .as_os_str()
            .as_bytes(),
    )
    .context("cgroup path holds a NUL byte")?;
    // Built here: the child may only make async-signal-safe calls.
    let filter = crate::control::seccomp::filter(
        created.daemon_pid,
        &crate::host::threads::threads_of(created.daemon_pid),
    )?;
    let ruleset = created
        .landlock
        .as_ref()
        .map(crate::control::landlock::prepare)
        .transpose()
        .with_context(|| format!("preparing the Landlock layer of task {}", created.task))?;
    let ruleset_fd = ruleset.as_ref().map(std::os::fd::AsRawFd::as_raw_fd);
    // SAFETY: the closure only makes async-signal-safe calls (open, write, close, prctl and
    // the Landlock syscall).
    unsafe {
        cmd.pre_exec(move || {
            // Writing "0" moves the writing process itself; done before exec so that the
            // new image runs tagged from its first instruction.
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let n = libc::write(fd, b"0".as_ptr().cast(), 1);
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if n != 1 {
                return Err(err);
            }
            // Tagged from here on; the filter makes what the kernel hooks could only
            // report after the fact impossible (see `seccomp`), and Landlock refuses file
            // access outside the scope before it happens (see `landlock`).
            crate::control::seccomp::install(&filter)?;
            match ruleset_fd {
                Some(fd) => crate::control::landlock::restrict(fd),
                None => Ok(()),
            }
        });
    }
    Ok(ruleset)
}

/// `exec --learn`: the proposal for what the task did, once it ended.
async fn learned(client: &Client, args: &ExecArgs, task: &str) -> anyhow::Result<()> {
    // The task ends when the daemon sees its cgroup empty; the proposal waits for its
    // last record.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let ended = client
            .get_json::<Value>(&format!("/v1/tasks/{task}"))
            .await
            .ok()
            .is_some_and(|v| v.get("end_reason").is_some_and(|r| !r.is_null()));
        if ended || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let answer = scope::propose::from_task(
        client,
        task,
        args.learn.as_deref(),
        args.owner.as_deref(),
        &args.deny,
    )
    .await?;
    scope::propose::emit_answer(&answer, args.out.as_deref())?;
    Ok(())
}

/// The body of `POST /v1/tasks/{id}/calls` for `exec --call`.
fn call_request(args: &ExecArgs, name: &str, landlock_abi: u32) -> anyhow::Result<Value> {
    let mut body = json!({ "name": name, "landlock_abi": landlock_abi });
    match &args.scope {
        Some(scope) if Path::new(scope).is_file() => {
            let yaml =
                std::fs::read_to_string(scope).with_context(|| format!("reading {scope}"))?;
            body["scope_yaml"] = Value::String(yaml);
        }
        Some(scope) => body["scope"] = Value::String(scope.clone()),
        None => {}
    }
    Ok(body)
}

/// The body of `POST /v1/tasks` for `exec`.
fn task_request(args: &ExecArgs, landlock_abi: u32) -> anyhow::Result<Value> {
    let mut body = json!({ "task": args.task, "ttl": args.ttl, "landlock_abi": landlock_abi });
    match (&args.scope, &args.learn) {
        (Some(scope), _) if Path::new(scope).is_file() => {
            let yaml =
                std::fs::read_to_string(scope).with_context(|| format!("reading {scope}"))?;
            body["scope_yaml"] = Value::String(yaml);
        }
        (Some(scope), _) => body["scope"] = Value::String(scope.clone()),
        (None, Some(name)) => {
            body["learn"] = Value::String(name.clone());
            // The sponsor is who ran `sudo exec --learn`, not root (the daemon's default).
            let owner = args
                .owner
                .clone()
                .or_else(|| std::env::var("SUDO_USER").ok());
            body["owner"] = owner.map_or(Value::Null, Value::String);
        }
        (None, None) => anyhow::bail!("exec needs --scope or --learn"),
    }
    Ok(body)
}

/// One line naming why a task's command was killed: the violation that stopped it, or the
/// revocation. The daemon may record it a moment after the kernel acted: ask a few times.
async fn why_killed(client: &Client, task: &str) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        if let Ok(v) = client.get_json::<Value>(&format!("/v1/tasks/{task}")).await {
            let field = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            if let Some(violation) = field("last_violation") {
                return format!("task {task} killed for a violation: {violation}");
            }
            if let Some(reason) =
                field("end_reason").filter(|r| r.starts_with("revoked") || r.starts_with("killed"))
            {
                return format!("task {task} {reason}");
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return format!(
                "task {task}: the command was killed (SIGKILL); no violation was recorded"
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
