//! The status socket (brief section 5): HTTP/1.1 + JSON on a Unix socket.

pub mod client;
mod server;

pub use server::serve;
