//! What happens after a verdict: the record's action and the steps the daemon itself must
//! take (kill a process, kill the agent, release a held exec). Pure: the pipeline executes
//! the steps.

pub(crate) use crate::kernel::decoder::KernelDid;
use crate::{
    observe::record::{Action, Kind, Layer},
    scope::{Mode, OnViolation},
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// SIGCONT a held exec that turned out to be in scope.
    Release,
    /// SIGKILL the process (the kernel could not decide this one).
    KillProcess,
    /// cgroup.kill the whole task.
    KillAgent,
    /// Open a request for a person (`onViolation: ask`): a held process stays stopped, a
    /// refused network call waits for its retry.
    Ask,
}

/// `certain`: the object was identified exactly. The daemon never kills on a guess (a path
/// it could not resolve); the kernel's own identity checks are not affected.
pub(crate) fn decide(
    kind: Kind,
    violation: bool,
    certain: bool,
    mode: Mode,
    on_violation: OnViolation,
    kernel: KernelDid,
) -> (Action, Option<Step>) {
    // A refused connect, send, bind or escape syscall already failed; the process lives on.
    let refused = matches!(kind, Kind::Connect | Kind::Send | Kind::Bind)
        || (kind == Kind::Escape && kernel.blocked);
    let base = if kernel.killed {
        Action::KilledProcess
    } else if kernel.blocked {
        Action::Blocked
    } else if kernel.refused {
        Action::Refused
    } else {
        Action::None
    };
    if !violation {
        return (base, kernel.held.then_some(Step::Release));
    }
    if mode == Mode::Audit || !certain {
        return (base, kernel.held.then_some(Step::Release));
    }
    if kernel.refused {
        // Refused by Landlock before it happened: the record says so, and onViolation
        // still decides what happens to the process afterwards.
        return match on_violation {
            OnViolation::KillAgent => (base, Some(Step::KillAgent)),
            OnViolation::KillProcess => (base, Some(Step::KillProcess)),
            OnViolation::Refuse | OnViolation::Alert | OnViolation::Ask => (base, None),
        };
    }
    match on_violation {
        OnViolation::KillAgent => (Action::KilledAgent, Some(Step::KillAgent)),
        // Escapes are never asked; what the kernel killed by identity (files.deny) is gone.
        OnViolation::Ask if kind != Kind::Escape && kernel.held && !kernel.killed => {
            (Action::Held, Some(Step::Ask))
        }
        OnViolation::Ask if matches!(kind, Kind::Connect | Kind::Send) && kernel.blocked => {
            (base, Some(Step::Ask))
        }
        // A held operation (a Unix-socket connect) waits for this decision.
        _ if refused && !kernel.held => (base, None),
        OnViolation::Alert => (base, kernel.held.then_some(Step::Release)),
        // With `refuse`, what the kernel could not refuse falls back to the kill.
        OnViolation::KillProcess | OnViolation::Refuse | OnViolation::Ask if kernel.killed => {
            (Action::KilledProcess, None)
        }
        // `ask` on what was not held (an unlink that already happened, an escape): the kill.
        OnViolation::KillProcess | OnViolation::Refuse | OnViolation::Ask => {
            (Action::KilledProcess, Some(Step::KillProcess))
        }
    }
}

/// The mechanism that first stopped the operation (None when nothing was done): the
/// kernel's refusal, its kill or hold, else the daemon's own step.
pub(crate) fn layer(kind: Kind, kernel: KernelDid, action: Action) -> Option<Layer> {
    if action == Action::None {
        None
    } else if kernel.refused {
        Some(Layer::Landlock)
    } else if kernel.blocked {
        Some(if kind == Kind::Escape {
            Layer::Seccomp
        } else {
            Layer::CgroupHook
        })
    } else if kernel.killed || kernel.held {
        Some(Layer::Ebpf)
    } else if matches!(action, Action::KilledProcess | Action::KilledAgent) {
        Some(Layer::Daemon)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONE: KernelDid = KernelDid {
        killed: false,
        blocked: false,
        held: false,
        refused: false,
    };

    #[test]
    fn audit_never_acts() {
        assert_eq!(
            decide(
                Kind::File,
                true,
                true,
                Mode::Audit,
                OnViolation::KillAgent,
                NONE
            ),
            (Action::None, None)
        );
        assert_eq!(
            decide(
                Kind::Connect,
                true,
                true,
                Mode::Audit,
                OnViolation::KillAgent,
                NONE
            ),
            (Action::None, None)
        );
    }

    #[test]
    fn enforce_kill_process() {
        let killed = KernelDid {
            killed: true,
            ..NONE
        };
        assert_eq!(
            decide(
                Kind::File,
                true,
                true,
                Mode::Enforce,
                OnViolation::KillProcess,
                killed
            ),
            (Action::KilledProcess, None)
        );
        assert_eq!(
            decide(
                Kind::File,
                true,
                true,
                Mode::Enforce,
                OnViolation::KillProcess,
                NONE
            ),
            (Action::KilledProcess, Some(Step::KillProcess)),
            "what the kernel could not decide, the daemon kills"
        );
        let blocked = KernelDid {
            blocked: true,
            ..NONE
        };
        assert_eq!(
            decide(
                Kind::Connect,
                true,
                true,
                Mode::Enforce,
                OnViolation::KillProcess,
                blocked
            ),
            (Action::Blocked, None)
        );
    }

    #[test]
    fn enforce_kill_agent_and_alert() {
        let blocked = KernelDid {
            blocked: true,
            ..NONE
        };
        assert_eq!(
            decide(
                Kind::Connect,
                true,
                true,
                Mode::Enforce,
                OnViolation::KillAgent,
                blocked
            ),
            (Action::KilledAgent, Some(Step::KillAgent))
        );
        assert_eq!(
            decide(
                Kind::Exec,
                true,
                true,
                Mode::Enforce,
                OnViolation::Alert,
                NONE
            ),
            (Action::None, None)
        );
        assert_eq!(
            decide(
                Kind::Connect,
                true,
                true,
                Mode::Enforce,
                OnViolation::Alert,
                blocked
            ),
            (Action::Blocked, None)
        );
    }

    #[test]
    fn the_daemon_never_kills_on_an_unresolved_path() {
        let uncertain = decide(
            Kind::File,
            true,
            false,
            Mode::Enforce,
            OnViolation::KillAgent,
            NONE,
        );
        assert_eq!(uncertain, (Action::None, None));
        let killed = KernelDid {
            killed: true,
            ..NONE
        };
        let by_kernel = decide(
            Kind::File,
            true,
            false,
            Mode::Enforce,
            OnViolation::KillProcess,
            killed,
        );
        assert_eq!(
            by_kernel,
            (Action::KilledProcess, None),
            "the kernel's own kill is still reported"
        );
    }

    #[test]
    fn held_execs_are_released_or_killed() {
        let held = KernelDid { held: true, ..NONE };
        assert_eq!(
            decide(
                Kind::Exec,
                false,
                true,
                Mode::Enforce,
                OnViolation::KillProcess,
                held
            ),
            (Action::None, Some(Step::Release))
        );
        assert_eq!(
            decide(
                Kind::Exec,
                true,
                true,
                Mode::Enforce,
                OnViolation::KillProcess,
                held
            ),
            (Action::KilledProcess, Some(Step::KillProcess))
        );
        assert_eq!(
            decide(
                Kind::Exec,
                true,
                true,
                Mode::Enforce,
                OnViolation::Alert,
                held
            ),
            (Action::None, Some(Step::Release))
        );
    }

    #[test]
    fn held_unix_connects_wait_for_the_verdict_and_refused_escapes_live_on() {
        let held = KernelDid { held: true, ..NONE };
        let enforce = |kind, violation, kernel| {
            decide(
                kind,
                violation,
                true,
                Mode::Enforce,
                OnViolation::KillProcess,
                kernel,
            )
        };
        assert_eq!(
            enforce(Kind::Connect, true, held),
            (Action::KilledProcess, Some(Step::KillProcess)),
            "a held connect is not an already-refused one"
        );
        assert_eq!(
            enforce(Kind::Connect, false, held),
            (Action::None, Some(Step::Release))
        );
        let blocked = KernelDid {
            blocked: true,
            ..NONE
        };
        assert_eq!(
            enforce(Kind::Escape, true, blocked),
            (Action::Blocked, None),
            "the seccomp filter refused it: nothing happened"
        );
        assert_eq!(
            enforce(Kind::Escape, true, NONE),
            (Action::KilledProcess, Some(Step::KillProcess)),
            "an escape syscall that ran"
        );
    }

    #[test]
    fn ask_holds_what_was_held_and_kills_the_rest() {
        let held = KernelDid { held: true, ..NONE };
        let blocked = KernelDid {
            blocked: true,
            ..NONE
        };
        let killed = KernelDid {
            killed: true,
            ..NONE
        };
        let ask = |kind, kernel| decide(kind, true, true, Mode::Enforce, OnViolation::Ask, kernel);
        assert_eq!(ask(Kind::File, held), (Action::Held, Some(Step::Ask)));
        assert_eq!(ask(Kind::Exec, held), (Action::Held, Some(Step::Ask)));
        assert_eq!(ask(Kind::Connect, held), (Action::Held, Some(Step::Ask)));
        assert_eq!(
            ask(Kind::Connect, blocked),
            (Action::Blocked, Some(Step::Ask)),
            "a refused connect becomes a request"
        );
        assert_eq!(ask(Kind::Bind, blocked), (Action::Blocked, None));
        assert_eq!(
            ask(Kind::File, killed),
            (Action::KilledProcess, None),
            "files.deny stays a kill"
        );
        assert_eq!(
            ask(Kind::Escape, NONE),
            (Action::KilledProcess, Some(Step::KillProcess)),
            "escapes are never asked"
        );
        assert_eq!(
            ask(Kind::File, NONE),
            (Action::KilledProcess, Some(Step::KillProcess)),
            "an unlink that already happened cannot wait"
        );
        assert_eq!(
            decide(
                Kind::File,
                false,
                true,
                Mode::Enforce,
                OnViolation::Ask,
                held
            ),
            (Action::None, Some(Step::Release))
        );
        assert_eq!(
            decide(Kind::File, true, true, Mode::Audit, OnViolation::Ask, held),
            (Action::None, Some(Step::Release))
        );
    }

    #[test]
    fn refused_by_landlock_kills_only_when_asked_to() {
        let refused = KernelDid {
            refused: true,
            ..NONE
        };
        let run = |on| decide(Kind::File, true, true, Mode::Enforce, on, refused);
        assert_eq!(run(OnViolation::Refuse), (Action::Refused, None));
        assert_eq!(run(OnViolation::Alert), (Action::Refused, None));
        assert_eq!(
            run(OnViolation::KillProcess),
            (Action::Refused, Some(Step::KillProcess))
        );
        assert_eq!(
            run(OnViolation::KillAgent),
            (Action::Refused, Some(Step::KillAgent))
        );
        assert_eq!(
            layer(Kind::File, refused, Action::Refused),
            Some(Layer::Landlock)
        );
        // What Landlock cannot refuse (a held open) falls back to the kill with `refuse`.
        let held = KernelDid { held: true, ..NONE };
        assert_eq!(
            decide(
                Kind::File,
                true,
                true,
                Mode::Enforce,
                OnViolation::Refuse,
                held
            ),
            (Action::KilledProcess, Some(Step::KillProcess))
        );
        assert_eq!(
            layer(Kind::File, held, Action::KilledProcess),
            Some(Layer::Ebpf)
        );
        let blocked = KernelDid {
            blocked: true,
            ..NONE
        };
        assert_eq!(
            layer(Kind::Escape, blocked, Action::Blocked),
            Some(Layer::Seccomp)
        );
        assert_eq!(
            layer(Kind::Connect, blocked, Action::Blocked),
            Some(Layer::CgroupHook)
        );
        assert_eq!(layer(Kind::File, NONE, Action::None), None);
    }
}
