//! Starting a [`Process`]: the binary cargo built, run with exactly the given
//! environment in an empty directory, its stdout and stderr in a fresh log
//! file. It never waits on the child: that is `waiting`'s.

use std::{
    fs::File,
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
        let path = binary(name);
        let dir = std::env::temp_dir().join("wxpay-e2e");
        std::fs::create_dir_all(&dir)?;
        static SPAWNED: AtomicUsize = AtomicUsize::new(0);
        let n = SPAWNED.fetch_add(1, Ordering::Relaxed);
        let log = dir.join(format!("{name}-{}-{n}.log", std::process::id()));
        let out = File::create(&log)?;
        let err = out.try_clone()?;
        let child = Command::new(&path)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            // The binaries load `.env` from the working directory and its parents:
            // run them where there is none.
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("cannot start {}", path.display()))?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log,
        })
    }
}
