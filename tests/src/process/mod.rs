//! The [`Process`] guard: one child binary started with exactly the given
//! environment, its output captured to a log file, and killed when the guard
//! drops however the test ends. Waiting on it (readiness, SIGTERM, its log
//! tail) is `waiting`'s; what the children are and how they are wired is
//! `stack`'s.

mod waiting;

use std::{
    fs::File,
    path::PathBuf,
    process::{Command, Stdio},
    sync::atomic::{AtomicUsize, Ordering},
};

use anyhow::Context;

use crate::binaries::binary;

/// A running binary, killed when dropped (a failed assertion must not leave
/// servers behind). Its stdout and stderr go to a log file shown on failure.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: std::process::Child,
    log: PathBuf,
}

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

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
