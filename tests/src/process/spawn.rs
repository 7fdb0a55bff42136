//! Starting a [`Process`]: the binary cargo built (or a program the machine
//! provides, such as chromedriver), run with exactly the given environment in
//! an empty directory, its stdout and stderr in a fresh log file. It never
//! waits on the child: that is `waiting`'s.

use std::{
    fs::File,
    os::unix::process::CommandExt,
    path::Path,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::Context;

use crate::binaries::binary;

use super::Process;

impl Process {
    /// Starts `target/debug/<name>` with exactly `env` (nothing inherited, so a
    /// developer's shell or `.env` cannot change what is tested).
    pub fn spawn(name: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        start(name, &binary(name), &[], env, None, false)
    }

    /// Starts `target/debug/<name>` with exactly `env` in the directory `dir`
    /// (the product binary `wxpay` keeps its SQLite database in `./data`),
    /// as the leader of a process group of its own, killed as a group.
    pub fn spawn_group_in(name: &str, dir: &Path, env: &[(&str, String)]) -> anyhow::Result<Self> {
        start(name, &binary(name), &[], env, Some(dir), true)
    }

    /// Starts a program of the machine's (not one cargo built) with `args` and
    /// exactly `env`, as the leader of a process group of its own: dropping the
    /// guard kills the whole group, so what it started (chromedriver's
    /// chromium and chromium's helpers) dies with it, not only the leader.
    pub(crate) fn spawn_group(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(&str, String)],
    ) -> anyhow::Result<Self> {
        start(name, program, args, env, None, true)
    }
}

fn start(
    name: &str,
    path: &Path,
    args: &[String],
    env: &[(&str, String)],
    cwd: Option<&Path>,
    own_group: bool,
) -> anyhow::Result<Process> {
    let dir = std::env::temp_dir().join("wxpay-e2e");
    std::fs::create_dir_all(&dir)?;
    static SPAWNED: AtomicUsize = AtomicUsize::new(0);
    let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
    let log = dir.join(format!("{name}-{}-{n}.log", std::process::id()));
    let out = File::create(&log)?;
    let err = out.try_clone()?;
    let mut cmd = Command::new(path);
    cmd.args(args)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        // The binaries load `.env` from the working directory and its parents:
        // run them where there is none (the log directory, or the caller's).
        .current_dir(cwd.unwrap_or(&dir))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    if own_group {
        // 0: a new group whose id is the child's pid.
        cmd.process_group(0);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("cannot start {}", path.display()))?;
    Ok(Process {
        name: name.to_owned(),
        child,
        log,
        own_group,
    })
}
