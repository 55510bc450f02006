//! What the daemon says about what it saw: records (`record`), where they are written
//! (`sink`, as native JSON or as OCSF events: `ocsf`), and what the API shows of them (`feed`: recent records and followers; `usage`:
//! declared against used; `metrics`; `otlp`: the OpenTelemetry export). Below `control`: nothing here changes a task.

pub(crate) mod feed;
pub(crate) mod metrics;
pub(crate) mod ocsf;
pub(crate) mod otlp;
pub(crate) mod record;
pub(crate) mod sink;
pub(crate) mod usage;
