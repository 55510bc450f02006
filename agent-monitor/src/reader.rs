//! Reads the ring buffer: tokio `AsyncFd` wakes the task when records are ready; each wake
//! drains everything available, then the batch's records are written in one go.

use aya::maps::{MapData, RingBuf};
use tokio::{io::unix::AsyncFd, sync::watch};

use crate::{decoder::decode, pipeline::Pipeline, state::Stats};

pub async fn run(
    ring: RingBuf<MapData>,
    mut pipeline: Pipeline,
    stats: &Stats,
    mut stop: watch::Receiver<bool>,
) {
    // SAFETY: the RingBuf owns its map fd for as long as the AsyncFd owns the RingBuf, and
    // always reports that same fd.
    let mut fd = match unsafe { AsyncFd::register(ring) } {
        Ok(fd) => fd,
        Err(e) => {
            tracing::error!(error = %e, "cannot poll the event ring buffer; no events will be read");
            return;
        }
    };
    // Lifecycle notices (revocations, degraded agents) are written even when no event comes.
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => pipeline.flush(),
            guard = fd.readable_mut() => {
                let mut guard = match guard {
                    Ok(g) => g,
                    Err(e) => {
                        tracing::error!(error = %e, "polling the ring buffer failed");
                        return;
                    }
                };
                drain(guard.get_inner_mut(), &mut pipeline, stats);
                guard.clear_ready();
                pipeline.flush();
            }
            _ = stop.changed() => break,
        }
    }
    // Whatever the kernel wrote before the stop is still recorded.
    drain(fd.get_mut(), &mut pipeline, stats);
    pipeline.flush();
}

fn drain(ring: &mut RingBuf<MapData>, pipeline: &mut Pipeline, stats: &Stats) {
    while let Some(item) = ring.next() {
        match decode(&item) {
            Ok(event) => {
                drop(item);
                pipeline.handle(event);
            }
            Err(e) => {
                Stats::add(&stats.decode_errors, 1);
                tracing::warn!(error = %e, "undecodable event skipped");
            }
        }
    }
}
