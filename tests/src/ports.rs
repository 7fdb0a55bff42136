//! Choosing the loopback ports a stack's children listen on. It only picks
//! numbers; binding them is the children's job, so between the pick and the
//! child's bind a port must not be taken by anyone else. Two rules keep it so:
//!
//! - Ports come from below Linux's ephemeral range (32768–60999 by default).
//!   Every outbound connection and every `bind(0)` — Chromium's, chromedriver's,
//!   Postgres clients', this test's own — draws from that range, and a port
//!   picked with `bind(0)` and released could be handed to one of them a moment
//!   later (CI once lost a console test's port that way).
//! - Each picked port is reserved across processes by an advisory lock on a
//!   file named after it, held until this process exits. Test binaries and the
//!   chaos runner started at the same time therefore never pick the same port.
//!   The kernel drops the lock when the process ends, however it ends, so a
//!   killed test leaves nothing reserved.

use std::collections::HashSet;
use std::fs::{File, OpenOptions, TryLockError};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{bail, Context};
use rand::Rng;

/// The range picked from: above the well-known and commonly configured ports,
/// below the ephemeral range.
const FIRST: u16 = 20_000;
const LAST: u16 = 32_000;

/// Ports this process has reserved, with the lock files that reserve them.
static HELD: Mutex<Vec<(u16, File)>> = Mutex::new(Vec::new());

/// A port nobody listens on and no other test process has reserved.
pub fn free_port() -> anyhow::Result<u16> {
    let [port] = free_ports::<1>()?;
    Ok(port)
}

/// `N` distinct free ports, each reserved for the life of this process.
pub fn free_ports<const N: usize>() -> anyhow::Result<[u16; N]> {
    let dir = std::env::temp_dir().join("wxpay-test-ports");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut held = HELD
        .lock()
        .map_err(|_| anyhow::anyhow!("the port registry was poisoned by a panic"))?;
    let mine: HashSet<u16> = held.iter().map(|(port, _)| *port).collect();
    let mut rng = rand::rng();
    let mut ports = [0; N];
    let mut chosen = 0;
    // Far more tries than a busy machine needs; failing says why rather than spinning.
    for _ in 0..20_000 {
        if chosen == N {
            break;
        }
        let port = rng.random_range(FIRST..=LAST);
        if mine.contains(&port) || ports[..chosen].contains(&port) {
            continue;
        }
        let Some(lock) = reserve(&dir, port)? else {
            continue;
        };
        // Reserved among tests; now make sure nothing else listens there.
        if TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        held.push((port, lock));
        ports[chosen] = port;
        chosen += 1;
    }
    if chosen < N {
        bail!("found only {chosen} of {N} free ports in {FIRST}..={LAST}");
    }
    Ok(ports)
}

/// The lock reserving `port`, or `None` when another process holds it.
fn reserve(dir: &std::path::Path, port: u16) -> anyhow::Result<Option<File>> {
    let path: PathBuf = dir.join(port.to_string());
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .with_context(|| format!("opening {}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(TryLockError::WouldBlock) => Ok(None),
        Err(TryLockError::Error(e)) => {
            Err(e).with_context(|| format!("locking {}", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_distinct_below_the_ephemeral_range_and_reserved() {
        let first = free_ports::<8>().unwrap();
        let second = free_ports::<8>().unwrap();
        let all: HashSet<u16> = first.iter().chain(&second).copied().collect();
        assert_eq!(
            all.len(),
            16,
            "a port was handed out twice: {first:?} {second:?}"
        );
        assert!(all.iter().all(|p| (FIRST..=LAST).contains(p)));
        // Another process (here: another open of the same file) cannot take one.
        let dir = std::env::temp_dir().join("wxpay-test-ports");
        assert!(reserve(&dir, first[0]).unwrap().is_none());
    }
}
