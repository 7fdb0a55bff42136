//! The outside clients some tests drive a stack with, installed by the test
//! machinery itself so that a fresh machine needs nothing done by hand: the
//! Node examples' npm packages (`npm ci` from the committed lockfile in
//! `examples/`) and a Python venv under `target/` with a pinned requirements
//! file. It only installs and finds them; running them is the tests'.
//!
//! A missing `node`, `npm` or `python3` fails the test on CI (`CI=true`), where
//! .ci/run installs them, and skips it with a printed line elsewhere.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, OnceLock},
};

use anyhow::{bail, Context};

use crate::binaries::{target_dir, workspace_root};

/// Whether `program` runs (`program args…` exits 0). Missing on CI is an error;
/// missing elsewhere is `Ok(false)` after a line saying what did not run.
pub fn require_tool(program: &str, args: &[&str], what: &str) -> anyhow::Result<bool> {
    let runs = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if runs {
        return Ok(true);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        bail!("`{program}` is required on CI for {what} (.ci/run installs it)");
    }
    eprintln!("`{program}` is not installed: {what} did not run");
    Ok(false)
}

fn run(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// `examples/`, with its npm packages installed exactly as the lockfile pins
/// them (`npm ci`, once per test process); `None` when node or npm is missing
/// off CI.
pub fn npm_examples() -> anyhow::Result<Option<PathBuf>> {
    let what = "the Node examples' tests";
    if !require_tool("node", &["--version"], what)? || !require_tool("npm", &["--version"], what)? {
        return Ok(None);
    }
    let dir = workspace_root().join("examples");
    static INSTALLED: OnceLock<Result<(), String>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| {
            // --ignore-scripts: no package here needs an install step, so none
            // gets to run code at install time.
            run(
                Command::new("npm").current_dir(&dir).args([
                    "ci",
                    "--no-audit",
                    "--no-fund",
                    "--ignore-scripts",
                ]),
                "npm ci in examples/",
            )
            .map_err(|e| format!("{e:#}"))
        })
        .clone()
        .map_err(anyhow::Error::msg)?;
    Ok(Some(dir))
}

/// A venv under `target/` named `name` with `requirements` installed (pinned
/// versions, so an already-satisfied install is a quick no-op); its `python`,
/// or `None` when python3 (with venv) is missing off CI.
pub fn python_venv(name: &str, requirements: &Path) -> anyhow::Result<Option<PathBuf>> {
    if !require_tool(
        "python3",
        &["-c", "import venv, ensurepip"],
        "the Python reflection client's test",
    )? {
        return Ok(None);
    }
    // Tests of one process may ask at once: one creates and installs, the rest wait.
    static INSTALLING: Mutex<()> = Mutex::new(());
    let _one_at_a_time = INSTALLING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let venv = target_dir().join(name);
    let python = venv.join("bin").join("python");
    let has_pip = || {
        Command::new(&python)
            .args(["-m", "pip", "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !has_pip() {
        // None yet, or one a killed run left half made: start it afresh.
        let _ = std::fs::remove_dir_all(&venv);
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )?;
    }
    run(
        Command::new(&python)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(requirements),
        "pip install -r requirements.txt",
    )?;
    Ok(Some(python))
}
