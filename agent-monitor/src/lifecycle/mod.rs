//! Scope lifecycle (pure, no I/O but reading the given logs): from recorded activity to a
//! proposed scope (`propose`), a candidate judged against recorded activity (`replay`), and
//! what a scope change widens or narrows (`diff`). `log` reads audit logs into the records
//! the three work on.

pub(crate) mod diff;
pub(crate) mod log;
pub(crate) mod propose;
pub(crate) mod replay;
