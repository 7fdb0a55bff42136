//! The browser harness itself, before any console exists to test with it: a
//! real headless chromium fills in and submits a form served by a tiny axum
//! app in this test, the answer page says what was typed, and the screenshot
//! is a real PNG on disk. If this fails on CI, the console's browser tests
//! could not have run either.

use std::time::Duration;

use axum::{
    extract::Form,
    response::Html,
    routing::{get, post},
    Router,
};
use e2e_tests::Browser;

const FORM: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>form</title></head>
<body>
  <h1>Search orders</h1>
  <form method="post" action="/search">
    <label>Order <input id="q" name="q" value="placeholder"></label>
    <label>Note <input id="note" name="note"></label>
    <button id="go" type="submit">Search</button>
  </form>
</body></html>"#;

#[derive(serde::Deserialize)]
struct Search {
    q: String,
    note: String,
}

/// The answer page: what the server received, escaped as a server-rendered
/// page must (so a `<` typed in the form cannot become markup).
async fn search(Form(search): Form<Search>) -> Html<String> {
    let escape = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    Html(format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>result</title></head>\
         <body><h1>Result</h1><p id=\"result\">found {} ({})</p></body></html>",
        escape(&search.q),
        escape(&search.note),
    ))
}

#[tokio::test]
async fn fills_and_submits_a_form_and_saves_a_screenshot() -> anyhow::Result<()> {
    let app = Router::new()
        .route("/", get(|| async { Html(FORM) }))
        .route("/search", post(search));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let browser = Browser::start().await?;
    browser.goto(&format!("{base}/")).await?;
    assert_eq!(browser.text("h1").await?, "Search orders");

    // fill replaces what the field held (the placeholder value), and typed
    // text reaches the server as typed, Chinese and markup included.
    browser.fill("#q", "wx-order-2468").await?;
    browser.fill("#note", "退款 <b>¥24.68</b>").await?;
    browser.click("#go").await?;

    let result = browser
        .wait_for_text("#result", "found", Duration::from_secs(10))
        .await?;
    assert_eq!(result, "found wx-order-2468 (退款 <b>¥24.68</b>)");
    assert_eq!(browser.current_url().await?, format!("{base}/search"));

    let shot = browser.screenshot("result").await?;
    let png = std::fs::read(&shot)?;
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is not a PNG",
        shot.display()
    );
    assert!(
        png.len() > 1024,
        "{} is only {} bytes: an empty page?",
        shot.display(),
        png.len()
    );
    assert!(
        shot.ends_with("screenshots/fills_and_submits_a_form_and_saves_a_screenshot/result.png"),
        "screenshot at {}",
        shot.display()
    );

    // Waiting for text that never comes fails, naming what was there instead.
    let missing = browser
        .wait_for_text("#result", "never shown", Duration::from_millis(500))
        .await;
    let message = match missing {
        Ok(text) => panic!("found {text:?} that the page never showed"),
        Err(e) => format!("{e:#}"),
    };
    assert!(
        message.contains("found wx-order-2468"),
        "the failure says what the element showed: {message}"
    );

    browser.close().await?;
    server.abort();
    Ok(())
}

/// The live (not zombie) processes of process group `group`, from /proc.
fn members_of(group: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| {
        let stat = std::fs::read_to_string(entry.ok()?.path().join("stat")).ok()?;
        // `pid (comm) state ppid pgrp …`: comm may hold spaces and parentheses.
        let (head, rest) = stat.rsplit_once(')')?;
        let mut fields = rest.split_whitespace();
        let state = fields.next()?;
        let pgrp: u32 = fields.nth(1)?.parse().ok()?;
        (pgrp == group && state != "Z").then(|| format!("{head})"))
    })
    .collect()
}

#[tokio::test]
async fn a_browser_dropped_without_close_leaves_no_chromium_behind() -> anyhow::Result<()> {
    let browser = Browser::start().await?;
    browser.goto("about:blank").await?;
    let group = browser.process_group();
    let before = members_of(group);
    assert!(
        before.iter().any(|p| p.contains("chrom")) && before.len() > 1,
        "chromedriver and its chromium share the group: {before:?}"
    );

    // A failed assertion drops the browser without close().
    drop(browser);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let left = members_of(group);
        if left.is_empty() {
            return Ok(());
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still running 10 s after the drop: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
