//! agent-monitor command line: dispatches to the daemon or a client command.

#![warn(unreachable_pub, unused_crate_dependencies)]

use std::process::ExitCode;

mod api;
mod cli;
mod commands;
mod control;
mod daemon;
mod host;
mod kernel;
mod lifecycle;
mod observe;
mod pipeline;
mod policy;
mod scope;

use clap::Parser as _;
use cli::{Cli, Command, LogFormat};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log_format = match &cli.command {
        Command::Run(args) => args.log_format,
        _ => LogFormat::Text,
    };
    init_tracing(log_format);
    if let Command::Crd(args) = &cli.command {
        return match &args.render {
            None => {
                print!("{}", scope::crd::crd_yaml());
                exit(0)
            }
            Some(path) => match scope::crd::render_file(path) {
                Ok(text) => {
                    print!("{text}");
                    exit(0)
                }
                Err(e) => fail(&anyhow::Error::new(e)),
            },
        };
    }
    if let Command::Check(args) = &cli.command {
        return exit(commands::check(args));
    }
    // Before the async runtime: its idle workers would only blur the CPU time measured.
    if let Command::BenchPipeline(args) = &cli.command {
        return match commands::capacity::run(args) {
            Ok(()) => exit(0),
            Err(e) => fail(&e),
        };
    }
    if let Command::BenchLandlock(args) = &cli.command {
        return match commands::landlock_only::run(args) {
            Ok(code) => exit(code),
            Err(e) => fail(&e),
        };
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::Error::new(e).context("starting the async runtime")),
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Run(args) => daemon::run(args).await.map(|()| 0),
            Command::Exec(args) => commands::exec(args).await,
            Command::Mcp(args) => commands::mcp(args).await,
            Command::Status(args) => commands::status(args).await.map(|()| 0),
            Command::Agents(args) => commands::agents(args).await.map(|()| 0),
            Command::Events(args) => commands::events(args).await.map(|()| 0),
            Command::Report(args) => commands::report(args).await.map(|()| 0),
            Command::Holds(args) => commands::holds::holds(args).await.map(|()| 0),
            Command::Approve(args) => commands::holds::approve(args).await.map(|()| 0),
            Command::Deny(args) => commands::holds::deny(args).await.map(|()| 0),
            Command::Scope(command) => commands::scope::scope(command).await,
            Command::Check(_)
            | Command::BenchPipeline(_)
            | Command::BenchLandlock(_)
            | Command::Crd(_) => Ok(0),
        }
    });
    match result {
        Ok(code) => exit(code),
        Err(e) => fail(&e),
    }
}

/// Errors are one line (`agent-monitor: what: why: cause`), never a backtrace.
fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("agent-monitor: {e:#}");
    ExitCode::FAILURE
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("AGENT_MONITOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
