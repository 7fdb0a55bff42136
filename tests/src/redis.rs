//! A private redis-server child for the tests that stop, kill and restart
//! Redis under the stack: never the shared server other tests are using.

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{bail, Context};

/// A redis-server on its own loopback port, with nothing kept on disk (what is
/// lost when it dies is exactly what a crashed cache loses). Killed on drop.
pub struct PrivateRedis {
    port: u16,
    child: Option<std::process::Child>,
    secured: Option<Secured>,
}

/// What a secured server takes: TLS only (no plaintext port) and a password.
struct Secured {
    /// The CA, server certificate and key files; removed on drop.
    dir: PathBuf,
    password: String,
}

impl Drop for Secured {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl PrivateRedis {
    pub async fn start() -> anyhow::Result<Self> {
        let mut redis = Self {
            port: crate::free_port()?,
            child: None,
            secured: None,
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// A server reachable only over TLS (a certificate for `localhost` from a
    /// fresh CA: see [`ca_file`](Self::ca_file)) and only with a password, as
    /// a deployment whose Redis sits on a shared network runs it.
    pub async fn start_secured() -> anyhow::Result<Self> {
        let port = crate::free_port()?;
        let dir =
            std::env::temp_dir().join(format!("wxpay-redis-tls-{port}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let ca = wechat_sandbox::TestCa::new("wxpay test Redis CA")?;
        let server = ca.issue_server(&["localhost", "127.0.0.1"])?;
        std::fs::write(dir.join("ca.pem"), ca.cert_pem())?;
        std::fs::write(dir.join("server.pem"), server.cert_pem())?;
        std::fs::write(
            dir.join("server.key"),
            secrecy::ExposeSecret::expose_secret(&server.key_pem()),
        )?;
        let mut redis = Self {
            port,
            child: None,
            secured: Some(Secured {
                dir,
                password: format!("pw-{}", ulid::Ulid::new()),
            }),
        };
        redis.restart().await?;
        Ok(redis)
    }

    /// `redis://127.0.0.1:PORT`, or for a secured server
    /// `rediss://:PASSWORD@localhost:PORT`.
    pub fn url(&self) -> String {
        match &self.secured {
            None => format!("redis://127.0.0.1:{}", self.port),
            Some(s) => format!("rediss://:{}@localhost:{}", s.password, self.port),
        }
    }

    /// A secured server's URL without its password.
    pub fn url_without_password(&self) -> Option<String> {
        self.secured
            .as_ref()
            .map(|_| format!("rediss://localhost:{}", self.port))
    }

    /// The PEM file of the CA a secured server's certificate chains to: what
    /// `SSL_CERT_FILE` names for the clients that must trust it.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.secured.as_ref().map(|s| s.dir.join("ca.pem"))
    }

    /// SIGKILL: the server vanishes mid-conversation, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// [`restart`](Self::restart) unless it is running.
    pub async fn restart_if_down(&mut self) -> anyhow::Result<()> {
        let running = self
            .child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none());
        if running {
            Ok(())
        } else {
            self.restart().await
        }
    }

    /// Starts it again on the same port and waits until it answers.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let mut command = std::process::Command::new("redis-server");
        match &self.secured {
            None => command.args(["--port", &self.port.to_string()]),
            Some(s) => command
                .args(["--port", "0", "--tls-port", &self.port.to_string()])
                .arg("--tls-cert-file")
                .arg(s.dir.join("server.pem"))
                .arg("--tls-key-file")
                .arg(s.dir.join("server.key"))
                .args(["--tls-auth-clients", "no", "--requirepass", &s.password]),
        };
        let child = command
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start redis-server (Debian: apt-get install redis-server)")?;
        self.child = Some(child);
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server did not listen on {}", self.port)
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}
