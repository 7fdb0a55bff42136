//! A TCP proxy to Postgres that a test can cut (open connections dropped, new
//! ones closed at once) and restore: a database that goes away for one
//! replica, or that is not there yet when a service starts.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use tokio::{net::TcpListener, task::JoinHandle};

pub struct PgProxy {
    pub addr: SocketAddr,
    up: Arc<AtomicBool>,
    live: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: JoinHandle<()>,
}

impl PgProxy {
    /// A proxy to `upstream` (`host:port`), forwarding from the start.
    pub async fn start(upstream: String) -> Self {
        let proxy = Self::start_cut(upstream).await;
        proxy.restore();
        proxy
    }

    /// A proxy that refuses every connection until [`Self::restore`].
    pub async fn start_cut(upstream: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let up = Arc::new(AtomicBool::new(false));
        let live: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let up = up.clone();
            let live = live.clone();
            async move {
                loop {
                    let Ok((mut client, _)) = listener.accept().await else {
                        continue;
                    };
                    if !up.load(Ordering::SeqCst) {
                        drop(client);
                        continue;
                    }
                    let upstream = upstream.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                    });
                    live.lock().expect("lock").push(task.abort_handle());
                }
            }
        });
        Self {
            addr,
            up,
            live,
            accept,
        }
    }

    /// The database becomes unreachable: open connections die, new ones are closed.
    pub fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.live.lock().expect("lock").drain(..) {
            task.abort();
        }
    }

    pub fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }

    /// `url` (a `postgres://` URL) with this proxy as its host and port.
    pub fn url_for(&self, url: &str) -> String {
        let (scheme, rest) = url.split_once("://").expect("a URL");
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let user = authority.rsplit_once('@').map(|(u, _)| format!("{u}@"));
        format!(
            "{scheme}://{}{}/{path}",
            user.unwrap_or_default(),
            self.addr
        )
    }
}

impl Drop for PgProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}
