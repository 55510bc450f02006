//! What the daemon does about agents: the tasks and their registry (`state`, `tasks`,
//! `persist`, `catalog`), the kernel maps that enforce a scope (`enforce`), the agents'
//! seccomp and Landlock layers (`seccomp`, `landlock`), escape judgement (`escape`), the
//! action a verdict leads to (`actions`), the per-agent DNS resolver (`dns`) and
//! Kubernetes adoption (`kubernetes`).

pub(crate) mod actions;
pub(crate) mod approval;
pub(crate) mod catalog;
pub(crate) mod dns;
pub(crate) mod enforce;
pub(crate) mod escape;
pub(crate) mod kubernetes;
pub(crate) mod landlock;
pub(crate) mod persist;
pub(crate) mod seccomp;
pub(crate) mod state;
pub(crate) mod tasks;
