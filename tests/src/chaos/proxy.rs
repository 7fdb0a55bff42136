//! The soak's in-process TCP proxy: a loopback listener that forwards each
//! connection to one of its backends, round robin, skipping a backend that
//! refuses (what a load balancer in front of two replicas does). It is also
//! the network the soak breaks: `cut` drops every open connection and then
//! refuses or blackholes new ones until `heal`; `set_latency` delays every
//! chunk forwarded either way. It knows nothing of the protocols it carries.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicU8, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// How a cut treats connections made while it lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// Accepted and closed at once: the client learns immediately.
    Refuse,
    /// Accepted and never answered until healed: the client waits on its
    /// own timeouts, as behind a dropped route.
    Blackhole,
}

const OPEN: u8 = 0;
const REFUSE: u8 = 1;
const BLACKHOLE: u8 = 2;

struct Inner {
    backends: Vec<SocketAddr>,
    next: AtomicUsize,
    cut: AtomicU8,
    latency_ms: AtomicU64,
    /// Bumped by every cut: each connection ends when it changes.
    generation: watch::Sender<u64>,
}

/// A running proxy; stops listening when dropped (open connections end with
/// the next cut or their own close).
pub struct Proxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `backends`.
    pub async fn start(backends: Vec<SocketAddr>) -> anyhow::Result<Self> {
        anyhow::ensure!(!backends.is_empty(), "a proxy needs a backend");
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (generation, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            backends,
            next: AtomicUsize::new(0),
            cut: AtomicU8::new(OPEN),
            latency_ms: AtomicU64::new(0),
            generation,
        });
        let task = tokio::spawn(accept(listener, inner.clone()));
        Ok(Self { inner, addr, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops every open connection; new ones are refused or blackholed until
    /// [`heal`](Self::heal).
    pub fn cut(&self, how: Cut) {
        let mode = match how {
            Cut::Refuse => REFUSE,
            Cut::Blackhole => BLACKHOLE,
        };
        self.inner.cut.store(mode, Ordering::SeqCst);
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// New connections are forwarded again (blackholed ones are closed).
    pub fn heal(&self) {
        self.inner.cut.store(OPEN, Ordering::SeqCst);
        self.inner.generation.send_modify(|g| *g += 1);
    }

    /// Delay added to every chunk forwarded, each way; zero for none.
    pub fn set_latency(&self, latency: Duration) {
        let ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.inner.latency_ms.store(ms, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        // Ends the connections still open, so nothing outlives the soak.
        self.inner.generation.send_modify(|g| *g += 1);
    }
}

async fn accept(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = client.set_nodelay(true);
        tokio::spawn(serve(client, inner.clone()));
    }
}

async fn serve(client: TcpStream, inner: Arc<Inner>) {
    let mut generation = inner.generation.subscribe();
    match inner.cut.load(Ordering::SeqCst) {
        REFUSE => return,
        BLACKHOLE => {
            // Held, unanswered, until the next heal (or cut) changes the generation.
            let _ = generation.changed().await;
            return;
        }
        _ => {}
    }
    let Some(upstream) = connect(&inner).await else {
        return;
    };
    let _ = upstream.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (upstream_read, upstream_write) = upstream.into_split();
    let both = async {
        tokio::join!(
            pump(client_read, upstream_write, &inner),
            pump(upstream_read, client_write, &inner)
        )
    };
    tokio::select! {
        _ = both => {}
        _ = generation.changed() => {}
    }
}

/// The next backend that accepts, starting after the last one used.
async fn connect(inner: &Inner) -> Option<TcpStream> {
    let n = inner.backends.len();
    let start = inner.next.fetch_add(1, Ordering::Relaxed);
    for i in 0..n {
        let backend = inner.backends[(start + i) % n];
        let attempt =
            tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(backend)).await;
        if let Ok(Ok(stream)) = attempt {
            return Some(stream);
        }
    }
    None
}

/// Copies one direction until EOF or an error, then half-closes the other side.
async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    inner: &Inner,
) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let latency = inner.latency_ms.load(Ordering::Relaxed);
        if latency > 0 {
            tokio::time::sleep(Duration::from_millis(latency)).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
