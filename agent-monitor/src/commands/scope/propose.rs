//! `agent-monitor scope propose`: from a task (the daemon reads its audit log) or from
//! audit logs given here, the proposed scope as YAML on stdout or in `--out`.

use std::{collections::BTreeSet, path::Path};

use anyhow::Context as _;
use hyper::Method;
use serde_json::json;

use crate::{
    api::{client::Client, proposal::ProposalAnswer},
    cli::ProposeArgs,
    lifecycle::{
        log::Log,
        propose::{Options, propose},
    },
};

pub(super) async fn run(args: ProposeArgs) -> anyhow::Result<i32> {
    if let Some(task) = &args.task {
        let client = Client::new(&args.socket);
        let answer = from_task(
            &client,
            task,
            args.name.as_deref(),
            args.owner.as_deref(),
            &args.deny,
        )
        .await?;
        return emit_answer(&answer, args.out.as_deref());
    }
    let log = Log::read(&args.from_log).context("reading the audit logs")?;
    let scopes: BTreeSet<&str> = log
        .entries
        .iter()
        .filter_map(|e| e.record.scope())
        .collect();
    let scope = match (&args.scope, scopes.len()) {
        (Some(s), _) => s.clone(),
        (None, 1) => scopes
            .iter()
            .next()
            .map(|s| (*s).to_owned())
            .unwrap_or_default(),
        (None, 0) => anyhow::bail!("no agent record in {} file(s)", args.from_log.len()),
        (None, _) => anyhow::bail!(
            "the logs hold records of several scopes ({}): pick one with --scope",
            scopes.into_iter().collect::<Vec<_>>().join(", ")
        ),
    };
    let owner = args.owner.clone().or_else(|| {
        log.select(Some(&scope), None)
            .find_map(|e| e.record.agent.as_ref().map(|a| a.owner.clone()))
    });
    let options = Options {
        name: args.name.clone().unwrap_or_else(|| scope.clone()),
        owner: owner.unwrap_or_else(|| "unknown".to_owned()),
        deny: args.deny.clone(),
        what: format!("scope {scope} in {} file(s)", args.from_log.len()),
    };
    for w in &log.warnings {
        eprintln!("{w}");
    }
    let proposal = propose(log.select(Some(&scope), None), &options, log.partial())?;
    let task = proposal
        .tasks
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    let answer = ProposalAnswer::new(proposal, task, log.partial(), Vec::new());
    emit_answer(&answer, args.out.as_deref())
}

/// Asks the daemon for a task's proposal.
pub(crate) async fn from_task(
    client: &Client,
    task: &str,
    name: Option<&str>,
    owner: Option<&str>,
    deny: &[String],
) -> anyhow::Result<ProposalAnswer> {
    let body = json!({ "name": name, "owner": owner, "deny": deny });
    let bytes = client
        .send(
            Method::POST,
            &format!("/v1/tasks/{task}/proposal"),
            Some(body),
        )
        .await
        .with_context(|| format!("asking the daemon for task {task}'s proposal"))?;
    serde_json::from_slice(&bytes).context("unexpected answer from the daemon")
}

/// The YAML to `out` (or stdout); what a reviewer must know to stderr. Exit 0.
pub(crate) fn emit_answer(answer: &ProposalAnswer, out: Option<&Path>) -> anyhow::Result<i32> {
    for w in &answer.warnings {
        eprintln!("{w}");
    }
    for w in &answer.withheld {
        eprintln!(
            "agent-monitor: withheld (matches files.deny, never proposed): {} of {} ({} record{})",
            w.access,
            w.path,
            w.records,
            if w.records == 1 { "" } else { "s" }
        );
    }
    if answer.running {
        eprintln!(
            "agent-monitor: task {} still runs: the proposal covers what it did so far",
            answer.task
        );
    }
    if answer.partial {
        eprintln!(
            "agent-monitor: PARTIAL: records are missing from the audit log (see the warnings); the proposal does not cover them"
        );
    }
    match out {
        Some(path) => {
            std::fs::write(path, &answer.yaml)
                .with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "agent-monitor: proposed scope written to {} ({} of {} records of {} used)",
                path.display(),
                answer.used,
                answer.records,
                answer.task
            );
        }
        None => print!("{}", answer.yaml),
    }
    Ok(0)
}
