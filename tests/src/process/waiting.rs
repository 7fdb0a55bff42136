//! Waiting on a running [`Process`]: until it reports ready, or until it exits
//! after SIGTERM as an orchestrator would stop it. It never starts a process
//! or decides what "ready" means: the caller passes the probe.

use std::{
    process::{Command, ExitStatus},
    time::Duration,
};

use anyhow::{bail, Context};

use super::Process;

/// How long a service may take to become ready: it runs the migrations on a
/// fresh database first, and the machine may be busy building or testing.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl Process {
    /// Sends SIGTERM (what `docker stop` and Kubernetes send) and waits up to
    /// `within` for the process to exit.
    pub async fn terminate(&mut self, within: Duration) -> anyhow::Result<ExitStatus> {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .context("cannot run kill")?;
        if !sent.success() {
            bail!("kill -TERM {} failed", self.pid());
        }
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(status) = self.exited() {
                return Ok(status);
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} still running {within:?} after SIGTERM; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Polls `probe` until it succeeds, failing early (with the log) if the
    /// process exits, and after [`READY_TIMEOUT`].
    pub(crate) async fn wait_ready<F, Fut>(&mut self, mut probe: F) -> anyhow::Result<()>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.exited() {
                bail!(
                    "{} exited during start-up ({status}); log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            if probe().await {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "{} not ready after {READY_TIMEOUT:?}; log:\n{}",
                    self.name,
                    self.log_tail()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
