//! Choosing the loopback ports a stack's children listen on. It only picks
//! numbers; binding them is the children's job.

use std::net::TcpListener;

/// A port nobody listens on right now. Another process could take it before the
/// child binds it; the child then fails to start and the test says so.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `N` distinct free ports: all are held until all are chosen, so none repeats.
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let listeners = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}
