//! Reads the ring buffers: tokio `AsyncFd` wakes the task when records are ready; each wake
//! drains everything available (verdicts first: a held process is waiting on them), then
//! the batch's records are written in one go.

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use crate::{decoder::decode, pipeline::Pipeline, state::Stats};

pub async fn run(
    events: RingBuf<MapData>,
    verdicts: RingBuf<MapData>,
    mut pipeline: Pipeline,
    stats: &Stats,
    mut stop: watch::Receiver<bool>,
) {
    // SAFETY: each RingBuf owns its map fd for as long as its AsyncFd owns it, and always
    // reports that same fd.
    let registered = unsafe { (AsyncFd::register(events), AsyncFd::register(verdicts)) };
    let (mut events, mut verdicts) = match registered {
        (Ok(e), Ok(v)) => (e, v),
        (Err(e), _) | (_, Err(e)) => {
            tracing::error!(error = %e, "cannot poll the event ring buffers; no events will be read");
            return;
        }
    };
    // Lifecycle notices (revocations, degraded agents) are written even when no event comes.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => pipeline.flush(),
            guard = verdicts.readable_mut() => {
                let Ok(mut guard) = guard.inspect_err(|e| tracing::error!(error = %e, "polling the verdict ring buffer failed")) else {
                    return;
                };
                drain(guard.get_inner_mut(), &mut pipeline, stats);
                guard.clear_ready();
                pipeline.flush();
            }
            guard = events.readable_mut() => {
                let Ok(mut guard) = guard.inspect_err(|e| tracing::error!(error = %e, "polling the event ring buffer failed")) else {
                    return;
                };
                drain(verdicts.get_mut(), &mut pipeline, stats);
                drain(guard.get_inner_mut(), &mut pipeline, stats);
                guard.clear_ready();
                pipeline.flush();
            }
            _ = stop.changed() => break,
        }
    }
    // Whatever the kernel wrote before the stop is still recorded.
    drain(verdicts.get_mut(), &mut pipeline, stats);
    drain(events.get_mut(), &mut pipeline, stats);
    pipeline.flush();
}

/// Decodes and handles every record a ring holds right now.
pub fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline, stats: &Stats) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(event) => {
                drop(item);
                pipeline.handle(event);
                if pipeline.batch_full() {
                    pipeline.flush();
                }
            }
            Err(e) => {
                Stats::add(&stats.decode_errors, 1);
                tracing::warn!(error = %e, "undecodable event skipped");
            }
        }
    }
}
