//! Which binaries an end-to-end stack runs, where cargo puts them, and building
//! them before a test starts one. It never starts a process: that is
//! `process`'s.

use std::{
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
};

/// The workspace's service binaries: the four [`Stack::start`](crate::Stack::start)
/// starts, and the operator console the console tests start beside them.
pub const BINARIES: [&str; 5] = [
    "wechat-sandbox",
    "payment-service",
    "gateway",
    "poller",
    "console",
];

/// The workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Cargo's target directory (`CARGO_TARGET_DIR` honoured).
pub(crate) fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// Where cargo puts the debug binaries.
pub fn binary(name: &str) -> PathBuf {
    target_dir().join("debug").join(name)
}

/// The one-command product binary (`cargo run` at the workspace root), which
/// the console's browser test runs. Not among [`BINARIES`] (the split
/// deployment's), so the other tests do not wait for it to link.
pub const PRODUCT: &str = "wxpay";

/// Builds the binaries once per test process. `cargo test -p e2e-tests` does not
/// build other packages' binaries, and a stale binary would test old code; a
/// build that is up to date takes about a second. `scripts/test.sh` builds them
/// before `cargo test`, so there this is a no-op.
pub fn build_binaries() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    build_once(&BUILT, &BINARIES)
}

/// [`build_binaries`] for [`PRODUCT`], once per test process.
pub fn build_product() -> anyhow::Result<()> {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    build_once(&BUILT, &[PRODUCT])
}

/// [`cargo_build`] at most once per `built`; later calls repeat its outcome.
fn build_once(built: &OnceLock<Result<(), String>>, packages: &[&str]) -> anyhow::Result<()> {
    built
        .get_or_init(|| cargo_build(packages))
        .clone()
        .map_err(anyhow::Error::msg)
}

/// `cargo build --bins -p …` for `packages`, run as a shell would run it.
fn cargo_build(packages: &[&str]) -> Result<(), String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "--bins"]);
    // `cargo test` gives this process the test crate's CARGO_PKG_NAME,
    // CARGO_MANIFEST_DIR…; build scripts that track them (ring's does)
    // would see them changed and rebuild, and the next `cargo test`
    // would rebuild them back: minutes each way. Build as a shell would.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let per_crate = key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_MANIFEST_DIR"
                    | "CARGO_MANIFEST_PATH"
                    | "CARGO_MANIFEST_LINKS"
                    | "CARGO_CRATE_NAME"
                    | "CARGO_PRIMARY_PACKAGE"
                    | "CARGO_TARGET_TMPDIR"
                    | "OUT_DIR"
            );
        if per_crate {
            cmd.env_remove(key);
        }
    }
    for package in packages {
        cmd.args(["-p", package]);
    }
    match cmd.status() {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("cargo build --bins failed: {s}")),
        Err(e) => Err(format!("cannot run cargo: {e}")),
    }
}
