//! The TLS accept loop: a rustls handshake per connection (in the connection's
//! own task, bounded in time, so a slow or silent client never holds up the
//! others), the verified client certificate turned into a [`ClientAuth`]
//! extension on every request of that connection, then hyper serving the
//! router; on shutdown it stops accepting and lets open connections finish, as
//! the plain listener does.

use std::{future::Future, sync::Arc, time::Duration};

use axum::{Extension, Router};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::{conn::auto, graceful::GracefulShutdown},
    service::TowerToHyperService,
};
use rustls::ServerConfig;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::Layer;

use crate::client_auth::ClientAuth;

/// A client that has not finished its handshake by then is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `router` over TLS on `listener` until `shutdown` resolves.
pub(crate) async fn serve(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(config);
    let builder = auto::Builder::new(TokioExecutor::new());
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "TLS accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Nagle off, as on the plain listener: small replies go out at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let (acceptor, builder, router) = (acceptor.clone(), builder.clone(), router.clone());
        // Taken before the handshake, so that a shutdown waits for connections
        // still shaking hands as well (at most HANDSHAKE_TIMEOUT).
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    // Among others: a client certificate the CA did not sign.
                    tracing::info!(error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::info!("TLS handshake timed out");
                    return;
                }
            };
            let auth = ClientAuth::of(tls.get_ref().1.peer_certificates());
            let service = TowerToHyperService::new(Extension(auth).layer(router));
            let connection = builder
                .serve_connection_with_upgrades(TokioIo::new(tls), service)
                .into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(error = %e, "TLS connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}
