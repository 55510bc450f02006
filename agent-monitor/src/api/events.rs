//! `GET /v1/events?follow=1&violations=1&task=ID&limit=N`: newline-delimited JSON records.
//!
//! Without `follow`: the most recent records kept in memory (at most `limit`, default all
//! kept, `feed::RECENT`; at start they are read back from the end of the audit log). With `follow`: the records written from now on, until the client
//! goes away or the daemon stops. A follower that falls behind by more than the follow
//! buffer gets a line `{"notice":"lagged","skipped":N}` and goes on with the newest records.
//! An empty line is sent after [`HEARTBEAT`] without records, so that a vanished client is
//! noticed and its place freed.

use std::{convert::Infallible, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Query, State, rejection::QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse as _, Response},
};
use serde::Deserialize;
use tokio::sync::broadcast::{Receiver, error::RecvError};

use super::{Api, error::ApiError};
use crate::observe::feed::{Entry, Filter, FollowerSlot, MAX_FOLLOWERS, RECENT};

pub(crate) const HEARTBEAT: Duration = Duration::from_secs(5);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    follow: Option<String>,
    violations: Option<String>,
    task: Option<String>,
    limit: Option<usize>,
}

fn flag(name: &str, value: Option<&str>) -> Result<bool, ApiError> {
    match value {
        None | Some("0" | "false" | "no") => Ok(false),
        Some("" | "1" | "true" | "yes") => Ok(true),
        Some(other) => Err(ApiError::bad_request(
            "bad_query",
            format!("{name}={other:?}: use 1 or 0"),
        )),
    }
}

pub(crate) async fn events(
    State(api): State<Arc<Api>>,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let follow = flag("follow", q.follow.as_deref())?;
    let filter = Filter {
        violations: flag("violations", q.violations.as_deref())?,
        task: q.task.filter(|t| !t.is_empty()),
    };
    let feed = &api.shared.observed.feed;
    let response = if follow {
        let Some((slot, rx)) = feed.follow() else {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_followers",
                format!("at most {MAX_FOLLOWERS} clients may follow events at once"),
            ));
        };
        let state = Follower {
            rx,
            filter,
            stop: api.stop.clone(),
            _slot: slot,
        };
        let stream = futures_util::stream::unfold(state, Follower::next);
        Response::new(Body::from_stream(stream))
    } else {
        let mut body = String::new();
        for e in feed.recent(&filter, q.limit.unwrap_or(RECENT)) {
            body.push_str(&e.line);
            body.push('\n');
        }
        Response::new(Body::from(body))
    };
    Ok(([(header::CONTENT_TYPE, "application/x-ndjson")], response).into_response())
}

struct Follower {
    rx: Receiver<Arc<Entry>>,
    filter: Filter,
    stop: tokio::sync::watch::Receiver<bool>,
    _slot: FollowerSlot,
}

impl Follower {
    async fn next(mut self) -> Option<(Result<Bytes, Infallible>, Self)> {
        loop {
            if *self.stop.borrow() {
                return None;
            }
            let got = tokio::select! {
                got = self.rx.recv() => got,
                _ = self.stop.changed() => return None,
                () = tokio::time::sleep(HEARTBEAT) => {
                    return Some((Ok(Bytes::from_static(b"\n")), self));
                }
            };
            match got {
                Ok(entry) if entry.matches(&self.filter) => {
                    let mut line = String::with_capacity(entry.line.len() + 1);
                    line.push_str(&entry.line);
                    line.push('\n');
                    return Some((Ok(Bytes::from(line)), self));
                }
                Ok(_) => {}
                Err(RecvError::Lagged(skipped)) => {
                    let line = format!("{{\"notice\":\"lagged\",\"skipped\":{skipped}}}\n");
                    return Some((Ok(Bytes::from(line)), self));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    }
}
