//! The pieces of a local stand-in for the Kubernetes API server that the Kubernetes tests
//! share: a JSON response, and a watch that streams one event per chunk.

use std::{
    io::Write as _,
    net::TcpStream,
    sync::mpsc::{Receiver, RecvTimeoutError},
    time::Duration,
};

/// A JSON response with `status` (`200 OK`, `404 Not Found`); false when the client is gone.
pub fn respond(out: &mut TcpStream, status: &str, body: &str) -> bool {
    write!(
        out,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .is_ok()
}

/// A watch response: one event per chunk as the test sends them, until the sender is
/// dropped (then the stream ends) or the client goes away.
pub fn stream_watch(out: &mut TcpStream, events: &Receiver<String>) {
    if out
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        .is_err()
    {
        return;
    }
    loop {
        match events.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let chunk = format!("{line}\n");
                if write!(out, "{:x}\r\n{chunk}\r\n", chunk.len()).is_err() {
                    return;
                }
                let _ = out.flush();
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => {
                let _ = out.write_all(b"0\r\n\r\n");
                return;
            }
        }
    }
}
