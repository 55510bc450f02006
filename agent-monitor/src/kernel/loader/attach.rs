//! Attaching one hook: a tracepoint program or a cgroup `sock_addr` program, its link kept
//! for pinning and its outcome recorded as a [`HookStatus`].

use std::{fs, path::Path};

use aya::{
    Ebpf,
    programs::{CgroupAttachMode, CgroupSockAddr, TracePoint, links::FdLink},
};

use super::{HookStatus, error_chain};
use crate::kernel::tracefs;

/// Why a hook did not attach (shown in its status).
#[derive(Debug, thiserror::Error)]
enum AttachError {
    #[error("program missing from the object")]
    NoProgram,
    #[error(transparent)]
    Program(#[from] aya::programs::ProgramError),
    #[error("load: {0}")]
    Load(String),
    #[error("attach: {0}")]
    Attach(String),
    #[error("not a bpf_link: {0}")]
    NotLink(#[from] aya::programs::links::LinkError),
}

/// Attaches `hook` (its record layout already checked), named `target` in the status.
pub(super) fn attach_tracepoint(
    ebpf: &mut Ebpf,
    hook: &tracefs::Hook,
    target: String,
    links: &mut Vec<(String, FdLink)>,
) -> HookStatus {
    let (program, category, name) = (hook.program, hook.category, hook.name.as_str());
    let result = (|| -> Result<(), AttachError> {
        let prog: &mut TracePoint = ebpf
            .program_mut(program)
            .ok_or(AttachError::NoProgram)?
            .try_into()?;
        if prog.fd().is_err() {
            prog.load()
                .map_err(|e| AttachError::Load(error_chain(&e)))?;
        }
        let id = prog
            .attach(category, name)
            .map_err(|e| AttachError::Attach(error_chain(&e)))?;
        links.push((target.clone(), FdLink::try_from(prog.take_link(id)?)?));
        Ok(())
    })();
    status(program, target, result.map_err(|e| e.to_string()))
}

pub(super) fn attach_sock_addr(
    ebpf: &mut Ebpf,
    program: &'static str,
    root_fd: &fs::File,
    root: &Path,
    links: &mut Vec<(String, FdLink)>,
) -> HookStatus {
    let target = format!("cgroup:{program}@{}", root.display());
    let result = (|| -> Result<(), AttachError> {
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(program)
            .ok_or(AttachError::NoProgram)?
            .try_into()?;
        prog.load()
            .map_err(|e| AttachError::Load(error_chain(&e)))?;
        // Single: through bpf_link the kernel attaches as multi anyway; AllowMultiple makes
        // link creation fail with EINVAL.
        let id = prog
            .attach(root_fd, CgroupAttachMode::Single)
            .map_err(|e| AttachError::Attach(error_chain(&e)))?;
        let link = FdLink::try_from(prog.take_link(id)?)?;
        links.push((format!("cgroup:{program}@{}", root.display()), link));
        Ok(())
    })();
    status(program, target, result.map_err(|e| e.to_string()))
}

fn status(program: &'static str, target: String, result: Result<(), String>) -> HookStatus {
    match result {
        Ok(()) => HookStatus::ok(program, target),
        Err(e) => HookStatus::failed(program, target, e),
    }
}
