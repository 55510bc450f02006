//! Builds the kernel programs (agent-monitor-ebpf) with aya-build and leaves the object in
//! `OUT_DIR`, where `src/ebpf_object.rs` embeds it.

use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use cargo_metadata::{Metadata, MetadataCommand, Package};

const EBPF_PACKAGE: &str = "agent-monitor-ebpf";

fn main() -> anyhow::Result<()> {
    let Metadata { packages, .. } = MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|Package { name, .. }| name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("{EBPF_PACKAGE} is not in the workspace"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("{} has no parent", ebpf.manifest_path))?;

    // `AYA_BUILD_SKIP=1` (pure unit tests, clippy on machines without bpf-linker) leaves an
    // empty object behind so the crate still compiles; the loader rejects it at run time.
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        let out = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
        let object = out.join(EBPF_PACKAGE.trim_end_matches("-ebpf"));
        if !object.exists() {
            fs::write(&object, []).with_context(|| format!("writing {}", object.display()))?;
        }
        println!("cargo:rerun-if-env-changed=AYA_BUILD_SKIP");
        return Ok(());
    }
    aya_build::build_ebpf(
        [aya_build::Package {
            name: EBPF_PACKAGE,
            root_dir: root_dir.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}
