//! Validated manifest values. Each one checks itself while the YAML reader is positioned
//! on its node, so that a rejection carries that node's line and column.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use globset::GlobMatcher;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::error::chain;
use crate::policy::{self, PolicyError};

/// Why one manifest value was rejected (shown as the reason of a [`super::ScopeError`]).
#[derive(Debug, thiserror::Error)]
pub(crate) enum ValueError {
    #[error("invalid scope name {0:?}: use 1 to 63 of a-z, 0-9 and '-'")]
    Name(String),
    #[error("must not be empty")]
    Empty,
    #[error("invalid duration {text:?}: {why} (write e.g. 90s, 30m or 1h30m; units d, h, m, s)")]
    Ttl { text: String, why: &'static str },
    #[error(transparent)]
    Glob(#[from] PolicyError),
    #[error("cgroup glob {0:?} must start with `/` (it is relative to the cgroup2 root)")]
    RelativeCgroup(String),
    #[error("invalid CIDR {text:?}")]
    Cidr {
        text: String,
        #[source]
        source: ipnet::AddrParseError,
    },
    #[error("CIDR {text:?} has host bits set: write {network}")]
    CidrHostBits { text: String, network: ipnet::IpNet },
    #[error("invalid host name {text:?}: {why}")]
    Host { text: String, why: &'static str },
    #[error("invalid port {0}: ports are 1..=65535")]
    Port(i128),
}

/// A value parsed from one YAML string scalar.
pub(super) trait FromScalar: Sized {
    const EXPECTING: &'static str;
    fn from_scalar(text: &str) -> Result<Self, ValueError>;
}

struct ScalarVisitor<T>(PhantomData<T>);

impl<T: FromScalar> Visitor<'_> for ScalarVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(T::EXPECTING)
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<T, E> {
        // The message is all serde keeps, so render the cause chain into it.
        T::from_scalar(text).map_err(|err| E::custom(chain(&err)))
    }
}

/// Deserializes a [`FromScalar`] value; validation runs inside the visitor, where
/// the reader still knows the scalar's position.
pub(super) fn deserialize_scalar<'de, D: Deserializer<'de>, T: FromScalar>(
    deserializer: D,
) -> Result<T, D::Error> {
    deserializer.deserialize_str(ScalarVisitor(PhantomData))
}

/// `Deserialize` through [`FromScalar`].
macro_rules! impl_deserialize_scalar {
    ($($ty:ty),*) => {$(
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_scalar(deserializer)
            }
        }
    )*};
}

/// `Serialize` as the canonical text, which is what `Display` shows.
macro_rules! serialize_display {
    ($($ty:ty),*) => {$(
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}

impl_deserialize_scalar!(ScopeName, NonEmpty, Ttl, PathGlob, CgroupGlob);
serialize_display!(Ttl, PathGlob, CgroupGlob);

/// `metadata.name`: `[a-z0-9-]{1,63}` (it names cgroups and appears in records).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct ScopeName(String);

impl FromScalar for ScopeName {
    const EXPECTING: &'static str = "a scope name of 1 to 63 of a-z, 0-9 and '-'";
    fn from_scalar(text: &str) -> Result<Self, ValueError> {
        let valid = (1..=63).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if valid {
            Ok(Self(text.to_owned()))
        } else {
            Err(ValueError::Name(text.to_owned()))
        }
    }
}

/// A string that is not blank (`metadata.owner`, `metadata.identity`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct NonEmpty(String);

impl FromScalar for NonEmpty {
    const EXPECTING: &'static str = "a non-empty string";
    fn from_scalar(text: &str) -> Result<Self, ValueError> {
        if text.trim().is_empty() {
            Err(ValueError::Empty)
        } else {
            Ok(Self(text.to_owned()))
        }
    }
}

/// `spec.ttl`: a positive duration such as `90s` or `1h30m` (units d, h, m, s, largest
/// first, each at most once).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Ttl(Duration);

impl Ttl {
    #[must_use]
    pub(crate) fn duration(self) -> Duration {
        self.0
    }

    /// Parses a TTL as a manifest does (also for `exec --ttl` and `POST /v1/tasks`); the
    /// error says what is wrong with it.
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        Self::from_scalar(text).map_err(|e| e.to_string())
    }
}

const UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

impl FromScalar for Ttl {
    const EXPECTING: &'static str = "a duration such as 90s, 30m or 1h30m";
    fn from_scalar(text: &str) -> Result<Self, ValueError> {
        let fail = |why| ValueError::Ttl {
            text: text.to_owned(),
            why,
        };
        let mut rest = text;
        let mut total: u64 = 0;
        // Index into UNITS of the next unit allowed: enforces largest-first, no repeats.
        let mut next_unit = 0;
        if rest.is_empty() {
            return Err(fail("empty"));
        }
        while !rest.is_empty() {
            let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
            if digits == 0 {
                return Err(fail("expected a number"));
            }
            let (number, tail) = rest.split_at(digits);
            let mut chars = tail.chars();
            let Some(unit) = chars.next() else {
                return Err(fail("missing unit"));
            };
            let Some(offset) = UNITS[next_unit..].iter().position(|(u, _)| *u == unit) else {
                return Err(if UNITS.iter().any(|(u, _)| *u == unit) {
                    fail("units must go from largest to smallest, each at most once")
                } else {
                    fail("unknown unit")
                });
            };
            let seconds = UNITS[next_unit + offset].1;
            next_unit += offset + 1;
            total = number
                .parse::<u64>()
                .ok()
                .and_then(|n| n.checked_mul(seconds))
                .and_then(|s| total.checked_add(s))
                .ok_or_else(|| fail("too large"))?;
            rest = chars.as_str();
        }
        if total == 0 {
            return Err(fail("must be longer than zero"));
        }
        Ok(Self(Duration::from_secs(total)))
    }
}

impl fmt::Display for Ttl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0.as_secs();
        for (unit, seconds) in UNITS {
            if rest >= seconds {
                write!(f, "{}{unit}", rest / seconds)?;
                rest %= seconds;
            }
        }
        Ok(())
    }
}

/// A file or exec path glob, checked by the policy engine's own rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PathGlob(String);

impl PathGlob {
    #[must_use]
    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromScalar for PathGlob {
    const EXPECTING: &'static str = "an absolute path glob";
    fn from_scalar(text: &str) -> Result<Self, ValueError> {
        policy::check_path_glob(text)?;
        Ok(Self(text.to_owned()))
    }
}

/// `spec.select.cgroup`: a glob on cgroup v2 paths relative to the cgroup2 root.
#[derive(Debug, Clone)]
pub(crate) struct CgroupGlob {
    pattern: String,
    matcher: GlobMatcher,
}

impl CgroupGlob {
    #[must_use]
    pub(crate) fn matcher(&self) -> &GlobMatcher {
        &self.matcher
    }
}

impl FromScalar for CgroupGlob {
    const EXPECTING: &'static str = "a cgroup path glob starting with /";
    fn from_scalar(text: &str) -> Result<Self, ValueError> {
        if !text.starts_with('/') {
            return Err(ValueError::RelativeCgroup(text.to_owned()));
        }
        Ok(Self {
            pattern: text.to_owned(),
            matcher: policy::compile_glob(text)?.compile_matcher(),
        })
    }
}

impl fmt::Display for PathGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for CgroupGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

impl ScopeName {
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}

impl NonEmpty {
    pub(crate) fn into_string(self) -> String {
        self.0
    }
}
