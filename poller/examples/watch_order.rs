//! Watches one order and prints each status change:
//! `cargo run -p poller --example watch_order -- <addr> <out_trade_no>`
//! (`addr` as `http://127.0.0.1:50052` or `127.0.0.1:50052`; `API_TOKEN` is sent when set).

use poller::client::{watch_order, WatchEnd};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(addr), Some(out_trade_no)) = (args.next(), args.next()) else {
        eprintln!("usage: watch_order <addr> <out_trade_no>");
        std::process::exit(2);
    };
    let url = if addr.contains("://") {
        addr
    } else {
        format!("http://{addr}")
    };
    let token = std::env::var("API_TOKEN").ok().filter(|t| !t.is_empty());
    let end = watch_order(&url, &out_trade_no, token.as_deref(), 0, |e| {
        println!(
            "{} {:?} version={} source={} transaction_id={}{}",
            e.out_trade_no,
            e.status(),
            e.version,
            e.source,
            e.transaction_id,
            if e.terminal { " (final)" } else { "" }
        );
    })
    .await?;
    if end == WatchEnd::Deadline {
        println!("deadline reached; watch again to keep waiting");
    }
    Ok(())
}
