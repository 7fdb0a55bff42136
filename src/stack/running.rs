//! A running stack: where it is, what it runs on, and stopping it, whether
//! asked to or because a service failed.

use std::{future::Future, sync::Arc};

use wxpay_store::Store;

use super::Stack;
use crate::{addresses::Addresses, settings::Settings};

impl Stack {
    pub fn addresses(&self) -> &Addresses {
        &self.addresses
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The store every service shares (unwrapped).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Serves until `shutdown` resolves (or a service stops on its own, which is
    /// a failure), then stops everything gracefully.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        // A service ends on its own only when it failed; then the rest stop too,
        // rather than leave a half-working product running.
        let early = tokio::select! {
            _ = shutdown => None,
            name = self.ended.recv() => name,
        };
        let result = self.stop().await;
        match early {
            Some(name) => Err(anyhow::anyhow!(
                "{name} stopped unexpectedly; everything was shut down"
            )),
            None => result,
        }
    }

    /// Stops every service (each drains its in-flight work, bounded) and closes
    /// the store. Returns the first service failure, if any.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.stop.cancel();
        let mut first_error = None;
        for (name, task) in self.tasks {
            let outcome = match task.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.context(format!("{name} failed"))),
                Err(e) => Err(anyhow::anyhow!("{name} panicked: {e}")),
            };
            tracing::debug!(service = name, "stopped");
            if let Err(e) = outcome {
                tracing::error!(error = format!("{e:#}"), "service failed");
                first_error.get_or_insert(e);
            }
        }
        if let Some(sqlite) = self.sqlite {
            sqlite.close().await;
        }
        tracing::info!("all services stopped");
        first_error.map_or(Ok(()), Err)
    }
}
