//! A record's JSON line, written straight into the writer's buffer.
//!
//! The bytes are exactly what `serde_json::to_writer` makes of the `Serialize` derive (the
//! tests compare the two): the audit log's format, which the OCSF and OTLP mappings and
//! every reader of the log depend on, does not change. The objects every event record has
//! (agent, process, file, net, exec, violation) are written by hand: through serde they
//! were most of the writer thread's time per record. The rare ones (call, kubernetes,
//! escape, task, approval) still go through serde.

use serde::Serialize;

use crate::{
    observe::record::{Action, ExecObject, FileObject, Layer, NetObject, Record, Verdict},
    policy::{Dimension, Violation},
};

mod shared;

pub(crate) use shared::Shared;

/// Appends `r` as one JSON object (no newline), its agent and process names from (or into)
/// `shared`. Fails only where serde would (a rare object that cannot be serialised); the
/// caller then drops the partial line.
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    r: &Record,
    shared: &mut Shared,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(b"{\"time\":");
    string(out, &r.time);
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(r.kind.name().as_bytes());
    out.extend_from_slice(b"\",\"verdict\":\"");
    out.extend_from_slice(verdict_name(r.verdict).as_bytes());
    out.extend_from_slice(b"\",\"action\":\"");
    out.extend_from_slice(r.action.name().as_bytes());
    out.push(b'"');
    if let Some(layer) = r.layer {
        out.extend_from_slice(b",\"layer\":\"");
        out.extend_from_slice(layer_name(layer).as_bytes());
        out.push(b'"');
    }
    if let Some(after) = r.after {
        action_field(out, b",\"after\":", after);
    }
    out.extend_from_slice(b",\"agent\":");
    shared.agent(out, &r.agent);
    if let Some(call) = &r.call {
        serde_field(out, b",\"call\":", call)?;
    }
    if let Some(p) = &r.process {
        out.extend_from_slice(b",\"process\":");
        shared.process(out, p);
    }
    if let Some(k) = &r.kubernetes {
        serde_field(out, b",\"kubernetes\":", k)?;
    }
    if let Some(f) = &r.file {
        out.extend_from_slice(b",\"file\":");
        file(out, f);
    }
    if let Some(n) = &r.net {
        out.extend_from_slice(b",\"net\":");
        net(out, n);
    }
    if let Some(e) = &r.exec {
        out.extend_from_slice(b",\"exec\":");
        exec(out, e);
    }
    if let Some(e) = &r.escape {
        serde_field(out, b",\"escape\":", e)?;
    }
    if let Some(v) = &r.violation {
        out.extend_from_slice(b",\"violation\":");
        violation(out, v);
    }
    if let Some(t) = &r.task {
        serde_field(out, b",\"task\":", t)?;
    }
    if let Some(count) = r.count {
        out.extend_from_slice(b",\"count\":");
        number(out, count);
    }
    if r.truncated {
        out.extend_from_slice(b",\"truncated\":true");
    }
    if let Some(a) = &r.approval {
        serde_field(out, b",\"approval\":", a)?;
    }
    out.push(b'}');
    Ok(())
}

fn serde_field<T: Serialize>(
    out: &mut Vec<u8>,
    key: &[u8],
    value: &T,
) -> Result<(), serde_json::Error> {
    out.extend_from_slice(key);
    serde_json::to_writer(&mut *out, value)
}

fn action_field(out: &mut Vec<u8>, key: &[u8], action: Action) {
    out.extend_from_slice(key);
    out.push(b'"');
    out.extend_from_slice(action.name().as_bytes());
    out.push(b'"');
}

fn file(out: &mut Vec<u8>, f: &FileObject) {
    out.extend_from_slice(b"{\"path\":");
    string(out, &f.path);
    out.extend_from_slice(b",\"access\":\"");
    out.extend_from_slice(f.access.as_str().as_bytes());
    out.push(b'"');
    if let Some(to) = &f.new_path {
        out.extend_from_slice(b",\"new_path\":");
        string(out, to);
    }
    if f.unresolved {
        out.extend_from_slice(b",\"unresolved\":true");
    }
    out.push(b'}');
}

fn net(out: &mut Vec<u8>, n: &NetObject) {
    out.extend_from_slice(b"{\"family\":");
    string(out, n.family);
    out.extend_from_slice(b",\"protocol\":");
    string(out, &n.protocol);
    out.extend_from_slice(b",\"address\":");
    string(out, &n.address);
    out.extend_from_slice(b",\"port\":");
    number(out, u64::from(n.port));
    if let Some(host) = &n.host {
        out.extend_from_slice(b",\"host\":");
        string(out, host);
    }
    out.push(b'}');
}

fn exec(out: &mut Vec<u8>, e: &ExecObject) {
    out.extend_from_slice(b"{\"path\":");
    string(out, &e.path);
    out.extend_from_slice(b",\"argv\":[");
    for (i, arg) in e.argv.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(out, arg);
    }
    out.push(b']');
    if let Some(script) = &e.script {
        out.extend_from_slice(b",\"script\":");
        string(out, script);
    }
    out.push(b'}');
}

fn violation(out: &mut Vec<u8>, v: &Violation) {
    out.extend_from_slice(b"{\"dimension\":\"");
    out.extend_from_slice(dimension_name(v.dimension).as_bytes());
    out.extend_from_slice(b"\",\"rule\":");
    string(out, &v.rule);
    out.extend_from_slice(b",\"reason\":");
    string(out, &v.reason);
    out.push(b'}');
}

fn verdict_name(v: Verdict) -> &'static str {
    match v {
        Verdict::Allowed => "allowed",
        Verdict::Violation => "violation",
    }
}

fn layer_name(l: Layer) -> &'static str {
    match l {
        Layer::Landlock => "landlock",
        Layer::Seccomp => "seccomp",
        Layer::CgroupHook => "cgroup-hook",
        Layer::Ebpf => "ebpf",
        Layer::Daemon => "daemon",
    }
}

fn dimension_name(d: Dimension) -> &'static str {
    match d {
        Dimension::Exec => "exec",
        Dimension::Files => "files",
        Dimension::Network => "network",
        Dimension::Escape => "escape",
    }
}

fn optional(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => string(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

/// A decimal number, as `serde_json` (`itoa`) writes it.
fn number(out: &mut Vec<u8>, n: u64) {
    let mut digits = [0u8; 20];
    let d = decimal(n, &mut digits);
    // Byte by byte: a copy of a few bytes of unknown length was a call to `memmove`,
    // which cost more than the digits.
    out.reserve(d.len());
    for &b in d {
        out.push(b);
    }
}

/// The decimal digits of `n`, as `Display` and `itoa` write them, in `digits`.
pub(crate) fn decimal(mut n: u64, digits: &mut [u8; 20]) -> &[u8] {
    let mut at = digits.len();
    loop {
        at -= 1;
        // `n % 10` is a digit: it always fits.
        digits[at] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &digits[at..]
}

/// A JSON string as `serde_json` escapes it: `"` and `\`, the short escapes for \b \f \n \r
/// \t, `\u00XX` (lowercase hex) for the other control bytes; everything else (DEL and
/// non-ASCII included) as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push(b'"');
    // Most strings need no escape: a check of every byte without early exit (the compiler
    // vectorises it), then one copy.
    #[expect(
        clippy::needless_bitwise_bool,
        reason = "no short-circuit: the check stays branch-free and vectorised"
    )]
    let plain = bytes
        .iter()
        .fold(true, |ok, &b| ok & (b >= 0x20) & (b != b'"') & (b != b'\\'));
    if plain {
        out.extend_from_slice(bytes);
        out.push(b'"');
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            0x08 => b"\\b",
            0x0c => b"\\f",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x00..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests;
