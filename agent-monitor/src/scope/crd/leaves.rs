//! The `OpenAPI` schema of the manifest's validated scalars. Their rules (globs, CIDRs, host
//! names, durations) are checked by the daemon while it reads a manifest, with the line and
//! column of the value; the schema gives the API server their shape and a description.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};

use super::super::kubernetes::{DnsLabel, LabelKey, LabelValue};
use super::super::net::{ConnectRuleSpec, Port};
use super::super::values::{CgroupGlob, NonEmpty, PathGlob, ScopeName, Ttl};

macro_rules! string_schema {
    ($($ty:ty => $description:literal),* $(,)?) => {$(
        impl JsonSchema for $ty {
            fn inline_schema() -> bool {
                true
            }
            fn schema_name() -> Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut SchemaGenerator) -> Schema {
                json_schema!({"type": "string", "description": $description})
            }
        }
    )*};
}

string_schema!(
    ScopeName => "A scope name: 1 to 63 of a-z, 0-9 and '-'.",
    NonEmpty => "A non-empty string.",
    Ttl => "A duration such as 90s, 30m or 1h30m (units d, h, m, s, largest first).",
    PathGlob => "An absolute path glob.",
    CgroupGlob => "A glob on cgroup v2 paths relative to the cgroup2 root, starting with /.",
    DnsLabel => "An RFC 1123 label (1-63 of a-z, 0-9 and '-').",
    LabelKey => "A label key ([dns-prefix/]name).",
    LabelValue => "A label value (empty, or 1-63 of alphanumerics, '-', '_', '.').",
);

impl JsonSchema for Port {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "Port".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "minimum": 1, "maximum": 65535})
    }
}

impl JsonSchema for ConnectRuleSpec {
    fn inline_schema() -> bool {
        true
    }
    fn schema_name() -> Cow<'static, str> {
        "ConnectRule".into()
    }
    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let ports = generator.subschema_for::<Vec<Port>>();
        json_schema!({
            "type": "object",
            "description": "One allowed connection: exactly one of `cidr` and `host`; any port when `ports` is absent.",
            "properties": {
                "cidr": {"type": "string", "description": "A CIDR such as 10.0.0.0/8, or one address."},
                "host": {"type": "string", "description": "A DNS name such as api.example.com or *.example.com."},
                "ports": ports,
                "protocol": {"type": "string", "enum": ["tcp", "udp", "any"]},
            },
        })
    }
}
