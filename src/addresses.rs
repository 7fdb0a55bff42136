//! Where each service of a running stack can be reached, and how a bound
//! address becomes one a client can dial.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use anyhow::Context;
use tokio::net::TcpListener;

/// Where each service can be reached (unspecified bind addresses written as 127.0.0.1).
#[derive(Debug, Clone, Copy)]
pub struct Addresses {
    pub payment: SocketAddr,
    pub gateway: SocketAddr,
    /// The gateway's `/metrics`, off its public port.
    pub gateway_metrics: SocketAddr,
    pub poller: SocketAddr,
    pub poller_metrics: SocketAddr,
    /// The WebSocket / SSE watch.
    pub poller_http: SocketAddr,
    pub sandbox: SocketAddr,
    /// The operator console, when served.
    pub console: Option<SocketAddr>,
}

impl Addresses {
    pub fn payment_url(&self) -> String {
        format!("http://{}", self.payment)
    }

    pub fn poller_url(&self) -> String {
        format!("http://{}", self.poller)
    }

    pub fn gateway_url(&self) -> String {
        format!("http://{}", self.gateway)
    }

    pub fn sandbox_url(&self) -> String {
        format!("http://{}", self.sandbox)
    }

    /// The WebSocket a mini program opens to watch `out_trade_no` with its token.
    pub fn watch_ws_url(&self, out_trade_no: &str, token: &str) -> String {
        format!(
            "ws://{}/v1/orders/{out_trade_no}/ws?token={token}",
            self.poller_http
        )
    }

    /// The `notify_url` sent with every unifiedorder: this process's gateway.
    pub fn notify_url(&self) -> String {
        format!("{}/wechat/pay/notify", self.gateway_url())
    }
}

pub(crate) async fn bind(var: &str, addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {var} {addr}"))
}

pub(crate) fn reachable(listener: &TcpListener) -> anyhow::Result<SocketAddr> {
    Ok(reachable_addr(listener.local_addr()?))
}

/// A bound address as a client dials it: 0.0.0.0 / [::] become loopback.
pub(crate) fn reachable_addr(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), addr.port())
    } else {
        addr
    }
}

pub(crate) fn with_port(addr: SocketAddr, port: u16) -> SocketAddr {
    reachable_addr(SocketAddr::new(addr.ip(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_bind_addresses_are_dialled_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8080".parse().expect("address");
        assert_eq!(reachable_addr(any).to_string(), "127.0.0.1:8080");
        let lan: SocketAddr = "10.0.0.5:8080".parse().expect("address");
        assert_eq!(reachable_addr(lan), lan);
    }
}
