//! A short string kept inline. A record's time and network address are made for every
//! event: as `String`s they cost an allocation each in the pipeline's thread and a free in
//! the writer's.

use std::{fmt, ops::Deref};

/// Bytes kept inline: an RFC 3339 time with nanoseconds is 30, an IPv6 address at most 45.
const INLINE: usize = 46;

/// A string of up to [`INLINE`] bytes in place, longer ones on the heap. Reads as a `str`;
/// serialises as one.
#[derive(Clone)]
pub(crate) struct ShortStr(Repr);

#[derive(Clone)]
enum Repr {
    /// `bytes[..len]` is UTF-8: only whole `str`s are appended.
    Inline {
        len: u8,
        bytes: [u8; INLINE],
    },
    Heap(String),
}

impl ShortStr {
    pub(crate) const fn new() -> Self {
        Self(Repr::Inline {
            len: 0,
            bytes: [0; INLINE],
        })
    }

    pub(crate) fn push_str(&mut self, s: &str) {
        match &mut self.0 {
            Repr::Inline { len, bytes } => {
                let at = usize::from(*len);
                let end = at + s.len();
                if let (Some(to), Ok(end_u8)) = (bytes.get_mut(at..end), u8::try_from(end)) {
                    to.copy_from_slice(s.as_bytes());
                    *len = end_u8;
                } else {
                    let mut long = String::with_capacity(end);
                    long.push_str(inline_str(bytes, at));
                    long.push_str(s);
                    self.0 = Repr::Heap(long);
                }
            }
            Repr::Heap(long) => long.push_str(s),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline { len, bytes } => inline_str(bytes, usize::from(*len)),
            Repr::Heap(s) => s,
        }
    }
}

/// The inline bytes as a `str`. Not checked again: a check on every read (the writer
/// reads each record's time and address) cost more than the allocation it replaced.
fn inline_str(bytes: &[u8; INLINE], len: usize) -> &str {
    let b = bytes.get(..len).unwrap_or_default();
    // SAFETY: `Repr::Inline` holds whole `str`s appended one after another (`push_str`
    // copies a `&str`, and `len` only ever moves to the end of one), so `bytes[..len]` is
    // UTF-8.
    unsafe { std::str::from_utf8_unchecked(b) }
}

impl Default for ShortStr {
    fn default() -> Self {
        Self::new()
    }
}

impl Deref for ShortStr {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ShortStr {
    fn from(s: &str) -> Self {
        let mut short = Self::new();
        short.push_str(s);
        short
    }
}

impl From<String> for ShortStr {
    fn from(s: String) -> Self {
        if s.len() <= INLINE {
            Self::from(s.as_str())
        } else {
            Self(Repr::Heap(s))
        }
    }
}

impl fmt::Write for ShortStr {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

impl PartialEq for ShortStr {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortStr {}

impl PartialEq<str> for ShortStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for ShortStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Debug for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for ShortStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for ShortStr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::fmt::Write as _;

    use super::*;

    #[test]
    fn reads_back_what_was_put_in_inline_or_not() {
        let fits = "x".repeat(INLINE);
        let long = "y".repeat(INLINE + 1);
        for s in ["", "2026-12-03T16:19:40.123456789Z", "é→ü", &fits, &long] {
            assert_eq!(ShortStr::from(s).as_str(), s);
            assert_eq!(ShortStr::from(s.to_owned()).as_str(), s);
            assert_eq!(
                serde_json::to_string(&ShortStr::from(s)).ok(),
                serde_json::to_string(s).ok()
            );
        }
        assert!(matches!(
            ShortStr::from(fits.as_str()).0,
            Repr::Inline { .. }
        ));
        assert!(matches!(ShortStr::from(long.as_str()).0, Repr::Heap(_)));
    }

    #[test]
    fn appending_past_the_inline_room_moves_it_to_the_heap_intact() {
        let mut s = ShortStr::new();
        let mut expected = String::new();
        for i in 0..40 {
            let _ = write!(s, "{i}ü");
            let _ = write!(expected, "{i}ü");
            assert_eq!(s.as_str(), expected);
        }
        assert!(matches!(s.0, Repr::Heap(_)));
    }
}
