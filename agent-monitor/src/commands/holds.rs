//! `holds`, `approve`, `deny`: requests of `onViolation: ask` (`/v1/holds`).

use std::fmt::Write as _;

use hyper::Method;
use serde_json::json;

use crate::{
    api::client::Client,
    cli::{ApproveArgs, DenyArgs, HoldsArgs},
    control::approval::RequestView,
};

pub(crate) async fn holds(args: HoldsArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.client.socket);
    loop {
        let list: Vec<RequestView> = client.get_json("/v1/holds").await?;
        if args.client.json {
            println!("{}", serde_json::to_string(&list)?);
        } else {
            print!("{}", render(&list));
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

pub(crate) async fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let body = json!({ "for_task": args.for_task, "note": args.note });
    decide(&args.client, args.id, "approve", body).await
}

pub(crate) async fn deny(args: DenyArgs) -> anyhow::Result<()> {
    let body = json!({ "note": args.note });
    decide(&args.client, args.id, "deny", body).await
}

async fn decide(
    client: &crate::cli::ClientArgs,
    id: u64,
    verb: &str,
    body: serde_json::Value,
) -> anyhow::Result<()> {
    let bytes = Client::new(&client.socket)
        .send(Method::POST, &format!("/v1/holds/{id}/{verb}"), Some(body))
        .await?;
    if client.json {
        println!("{}", String::from_utf8_lossy(&bytes));
    } else {
        let r: RequestView = serde_json::from_slice(&bytes)?;
        let done = if verb == "approve" {
            "approved"
        } else {
            "denied"
        };
        println!(
            "{done} {}: {} by {} ({}) in task {}",
            r.id, r.what, r.comm, r.pid, r.task
        );
    }
    Ok(())
}

fn render(list: &[RequestView]) -> String {
    let mut out = format!(
        "{:>5} {:<28} {:<12} {:>7} {:<16} {:>6}  {:<24}  WHAT\n",
        "ID", "TASK", "OWNER", "PID", "PROCESS", "AGE", "RULE"
    );
    for r in list {
        let _ = writeln!(
            out,
            "{:>5} {:<28} {:<12} {:>7} {:<16} {:>5}s  {:<24}  {}{}",
            r.id,
            r.task,
            r.owner,
            r.pid,
            r.comm,
            r.age_ms / 1000,
            r.rule,
            r.what,
            if r.stopped {
                ""
            } else {
                " (refused; retry after approval)"
            }
        );
    }
    out
}
