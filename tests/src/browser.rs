//! A real browser for the tests of server-rendered pages (the operator
//! console): Debian's headless chromium, driven over WebDriver through Debian's
//! chromedriver, which runs as a child [`Process`] on a free port.
//!
//! It owns: finding both programs (a missing one is an error naming the
//! packages, never a silent skip: a console test that did not run must not
//! pass), starting chromedriver and waiting until it is ready, opening one
//! session on a fresh profile, the few page actions tests need (by CSS
//! selector), polling for text instead of sleeping, and screenshots under
//! `target/screenshots/<test>/`. Dropping a [`Browser`] kills chromedriver and
//! every chromium process it started, however the test ends. What a page
//! should say is the tests'.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{bail, Context};
use fantoccini::{wd::TimeoutConfiguration, Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;

use crate::{binaries::target_dir, free_port, Process};

/// Debian's paths (packages `chromium` and `chromium-driver`).
const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// What to install when either is missing (fonts-noto-cjk: Chinese text in a
/// screenshot renders as text, not boxes).
const PACKAGES: &str = "chromium chromium-driver fonts-noto-cjk";

/// Headless and quiet: no GPU or sandbox (CI runs as root in a container,
/// where chromium's sandbox cannot start), /tmp instead of a small /dev/shm,
/// and none of the background traffic (updates, sync, QUIC probes) a test
/// machine neither has nor wants. A fixed window size, so screenshots of one
/// page are alike from run to run.
const CHROMIUM_ARGS: [&str; 10] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
];

/// The longest one WebDriver command may take (a page load included): a hung
/// browser fails the test with the step it hung in, instead of hanging CI.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// How often [`Browser::wait_for_text`] looks again.
const POLL: Duration = Duration::from_millis(100);

/// One headless chromium in one WebDriver session. Tests use the methods
/// below; anything else WebDriver can do is on [`Browser::client`].
pub struct Browser {
    client: Client,
    /// Declared after the client and before the profile: fields drop in
    /// order, so the processes die before their profile directory is removed.
    driver: Process,
    _profile: tempfile::TempDir,
    /// The directory of this test's screenshots.
    screenshots: PathBuf,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session to a headless
    /// chromium with a fresh profile. Screenshots go under the name of the
    /// test that calls this (the test thread's name).
    pub async fn start() -> anyhow::Result<Self> {
        installed(&[CHROMIUM, CHROMEDRIVER])?;
        let profile = tempfile::Builder::new()
            .prefix("wxpay-e2e-chromium-")
            .tempdir()
            .context("cannot create chromium's profile directory")?;
        let port = free_port()?;
        // Nothing inherited (as for the services): a PATH for Debian's chromium
        // wrapper script, and a HOME inside the profile so chromium and its
        // font cache write nothing into the real home directory.
        let home = profile.path().join("home");
        std::fs::create_dir_all(&home)?;
        let env = [
            ("PATH", "/usr/bin:/bin".to_owned()),
            ("HOME", home.display().to_string()),
        ];
        let mut driver = Process::spawn_group(
            "chromedriver",
            Path::new(CHROMEDRIVER),
            &[format!("--port={port}")],
            &env,
        )?;
        let status = format!("http://127.0.0.1:{port}/status");
        let http = reqwest::Client::new();
        driver
            .wait_ready(|| async {
                let answer = http.get(&status).timeout(Duration::from_secs(2)).send();
                let Ok(answer) = answer.await else {
                    return false;
                };
                let Ok(body) = answer.json::<serde_json::Value>().await else {
                    return false;
                };
                body["value"]["ready"] == json!(true)
            })
            .await?;

        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|&a| a.to_owned()).collect();
        args.push(format!("--user-data-dir={}", profile.path().display()));
        let mut capabilities = fantoccini::wd::Capabilities::new();
        capabilities.insert("browserName".into(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": CHROMIUM, "args": args }),
        );
        let session = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await;
        let client = match session {
            Ok(client) => client,
            Err(e) => bail!(
                "chromedriver could not start chromium: {e}; chromedriver's log:\n{}",
                driver.log_tail()
            ),
        };
        let timeouts = TimeoutConfiguration::new(None, Some(COMMAND_TIMEOUT), None);
        client
            .update_timeouts(timeouts)
            .await
            .context("cannot set the page-load timeout")?;

        Ok(Self {
            client,
            driver,
            _profile: profile,
            screenshots: target_dir().join("screenshots").join(test_name()),
        })
    }

    /// The process group of chromedriver and the chromium it started (its id
    /// is chromedriver's pid), all killed when the browser is dropped.
    pub fn process_group(&self) -> u32 {
        self.driver.pid()
    }

    /// The WebDriver client, for what the methods below do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Loads `url` and waits until the page has loaded.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        step(&format!("goto {url}"), self.client.goto(url)).await
    }

    /// The address the browser is at now (after redirects).
    pub async fn current_url(&self) -> anyhow::Result<String> {
        let url = step("current_url", self.client.current_url()).await?;
        Ok(url.into())
    }

    /// Empties the field at `css` and types `text` into it, as a person would.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let what = format!("fill {css}");
        let field = step(&what, self.client.find(Locator::Css(css))).await?;
        step(&what, field.clear()).await?;
        step(&what, field.send_keys(text)).await
    }

    /// Clicks the element at `css` (a submit button submits its form, and the
    /// next page has loaded when this returns).
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let what = format!("click {css}");
        let element = step(&what, self.client.find(Locator::Css(css))).await?;
        step(&what, element.click()).await
    }

    /// The visible text of the first element at `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let what = format!("text of {css}");
        let element = step(&what, self.client.find(Locator::Css(css))).await?;
        step(&what, element.text()).await
    }

    /// Polls until the first element at `css` shows text containing `needle`
    /// (a page that updates itself, or one still loading). After `timeout` it
    /// saves a screenshot and fails with what the element said last.
    pub async fn wait_for_text(
        &self,
        css: &str,
        needle: &str,
        timeout: Duration,
    ) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let last = match self.text(css).await {
                Ok(text) if text.contains(needle) => return Ok(text),
                Ok(text) => format!("its text was {text:?}"),
                // Missing, or replaced while read (the page navigated): look again.
                Err(e) => format!("{e:#}"),
            };
            if tokio::time::Instant::now() >= deadline {
                let url = self
                    .current_url()
                    .await
                    .unwrap_or_else(|e| format!("{e:#}"));
                let shot = match self.screenshot("wait_for_text-timeout").await {
                    Ok(path) => path.display().to_string(),
                    Err(e) => format!("(no screenshot: {e:#})"),
                };
                bail!(
                    "{css} did not show {needle:?} within {timeout:?} at {url}: {last}; \
                     screenshot {shot}"
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Saves what the window shows as `target/screenshots/<test>/<name>.png`
    /// (directories created, an earlier one of that name replaced), prints
    /// the path, and returns it.
    pub async fn screenshot(&self, name: &str) -> anyhow::Result<PathBuf> {
        let png = step("screenshot", self.client.screenshot()).await?;
        std::fs::create_dir_all(&self.screenshots)
            .with_context(|| format!("cannot create {}", self.screenshots.display()))?;
        let path = self.screenshots.join(format!("{}.png", file_name(name)));
        std::fs::write(&path, png).with_context(|| format!("cannot write {}", path.display()))?;
        println!("screenshot: {}", path.display());
        Ok(path)
    }

    /// Ends the session (chromium quits) and stops chromedriver. Dropping the
    /// browser instead kills both, which is fine after a failure.
    pub async fn close(self) -> anyhow::Result<()> {
        let Self {
            client,
            driver,
            _profile,
            ..
        } = self;
        let closed = step("close", client.close()).await;
        drop(driver);
        closed
    }
}

/// Fails, naming the packages to install, unless every one of `programs` exists.
fn installed(programs: &[&str]) -> anyhow::Result<()> {
    for program in programs {
        if !Path::new(program).exists() {
            bail!(
                "{program} is missing: the browser tests need Debian's packages \
                 {PACKAGES} (apt-get install {PACKAGES}; .ci/run and scripts/test.sh \
                 install them as root)"
            );
        }
    }
    Ok(())
}

/// Runs one WebDriver command with [`COMMAND_TIMEOUT`], naming it on failure.
async fn step<T, E>(
    what: &str,
    command: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(done) => done.with_context(|| format!("browser: {what}")),
        Err(_) => bail!("browser: {what} took more than {COMMAND_TIMEOUT:?}"),
    }
}

/// The test this runs in: libtest runs each test on a thread named after it
/// (`module::test_name`); elsewhere the executable's name.
fn test_name() -> String {
    let thread = std::thread::current();
    let name = match thread.name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.file_stem().map(|s| s.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "unnamed".to_owned()),
    };
    file_name(&name)
}

/// `name` as one safe path component: `::` and anything unusual become `_`.
fn file_name(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect();
    match safe.trim_matches('.') {
        "" => "unnamed".to_owned(),
        _ => safe,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_browser_is_an_error_naming_the_packages() {
        let missing = installed(&["/bin/sh", "/nonexistent/chromedriver"]);
        let message = match missing {
            Ok(()) => panic!("a missing chromedriver passed"),
            Err(e) => e.to_string(),
        };
        assert!(
            message.starts_with("/nonexistent/chromedriver is missing"),
            "{message}"
        );
        assert!(
            message.contains("apt-get install chromium chromium-driver"),
            "{message}"
        );
    }

    #[test]
    fn screenshot_names_stay_inside_their_directory() {
        assert_eq!(file_name("console::login_flow"), "console__login_flow");
        assert_eq!(file_name("../../etc/passwd"), ".._.._etc_passwd");
        assert_eq!(file_name(".."), "unnamed");
        assert_eq!(file_name("订单"), "__");
    }
}
