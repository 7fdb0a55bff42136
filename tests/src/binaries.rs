//! Which binaries an end-to-end stack runs, where cargo puts them, and building
//! them before a test starts one. It never starts a process: that is
//! `process`'s.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The workspace's binaries, each started by [`Stack::start`](crate::Stack::start).
pub const BINARIES: [&str; 4] = ["wechat-sandbox", "payment-service", "gateway", "poller"];

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Where cargo puts the debug binaries (`CARGO_TARGET_DIR` honoured).
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug").join(name)
}

/// Builds the binaries once per test process. `cargo test -p e2e-tests` does not
/// build other packages' binaries, and a stale binary would test old code; a
/// build that is up to date takes about a second. `scripts/test.sh` builds them
/// before `cargo test`, so there this is a no-op.
pub fn build_binaries() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.current_dir(workspace_root())
                .args(["build", "--quiet", "--bins"]);
            for bin in BINARIES {
                cmd.args(["-p", bin]);
            }
            match cmd.status() {
                Ok(s) if s.success() => Ok(()),
                Ok(s) => Err(format!("cargo build --bins failed: {s}")),
                Err(e) => Err(format!("cannot run cargo: {e}")),
            }
        })
        .clone()
        .map_err(anyhow::Error::msg)
}
