//! docker-compose.yml checked against the code, since CI has no Docker engine to
//! run it: every service built from the Dockerfile names a workspace `[[bin]]`
//! with a Dockerfile stage of that name; every variable its binary requires is
//! set and no variable is one the binary never reads; published ports are the
//! ports of its listen addresses, which must not be loopback inside a container;
//! health checks probe that port; URLs between services name a real service
//! and port.
//!
//! The variables a binary reads are found in its crate's source at test time,
//! not listed here: every call of a configuration helper (a function whose first
//! parameter is `var: &'static str` and which returns a `Result`, such as
//! `config::required` or the poller's `positive`) with a literal name, plus what
//! the shared helpers of `payment_service::config` it calls read
//! (`database_url()`, `WechatConfig::from_env()`, ...). A new variable in the
//! code therefore fails this test until compose sets it.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use e2e_tests::{workspace_root, BINARIES};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
struct Compose {
    services: BTreeMap<String, Service>,
}

#[derive(Debug, Clone, Deserialize)]
struct Service {
    build: Option<Build>,
    #[serde(default)]
    environment: BTreeMap<String, serde_yaml::Value>,
    #[serde(default)]
    ports: Vec<String>,
    healthcheck: Option<Healthcheck>,
    #[serde(default)]
    depends_on: BTreeMap<String, DependsOn>,
}

#[derive(Debug, Clone, Deserialize)]
struct Build {
    target: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct Healthcheck {
    test: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
struct DependsOn {
    condition: String,
}

impl Service {
    /// The value compose gives `var`, as a string (YAML may type it as a number).
    fn env(&self, var: &str) -> Option<String> {
        self.environment.get(var).map(|v| match v {
            serde_yaml::Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        })
    }

    /// `"HOST:CONTAINER"` port mappings, as (host, container).
    fn published(&self) -> Vec<(u16, u16)> {
        self.ports
            .iter()
            .filter_map(|p| {
                let (host, container) = p.rsplit_once(':')?;
                let host = host.rsplit(':').next()?;
                Some((host.parse().ok()?, container.parse().ok()?))
            })
            .collect()
    }
}

fn load_compose(text: &str) -> Compose {
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(text).expect("docker-compose.yml parses");
    // Compose resolves `<<: *anchor` merge keys; serde_yaml only on request.
    value.apply_merge().expect("merge keys resolve");
    serde_yaml::from_value(value).expect("docker-compose.yml has the expected shape")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// One binary of the workspace, from `cargo metadata`.
#[derive(Debug, Clone)]
struct Bin {
    /// The crate's `src/` directory.
    src_dir: PathBuf,
}

fn workspace_bins() -> BTreeMap<String, Bin> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace_root())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--offline",
        ])
        .output()
        .expect("run cargo metadata");
    assert!(
        out.status.success(),
        "cargo metadata: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut bins = BTreeMap::new();
    for package in meta["packages"].as_array().expect("packages") {
        let manifest = PathBuf::from(package["manifest_path"].as_str().expect("manifest_path"));
        let dir = manifest.parent().expect("package dir").to_path_buf();
        for target in package["targets"].as_array().expect("targets") {
            let is_bin = target["kind"]
                .as_array()
                .is_some_and(|k| k.iter().any(|k| k == "bin"));
            if is_bin {
                let name = target["name"].as_str().expect("target name").to_owned();
                bins.insert(
                    name,
                    Bin {
                        src_dir: dir.join("src"),
                    },
                );
            }
        }
    }
    bins
}

/// What a binary reads from the environment.
#[derive(Debug, Default, Clone)]
struct EnvUse {
    /// Variable → read with `required` (start-up fails without it).
    vars: BTreeMap<String, bool>,
    /// Listen-address variables (`addr("X", default)`) → their default.
    addrs: BTreeMap<String, String>,
}

impl EnvUse {
    fn read(&mut self, var: &str, required: bool) {
        *self.vars.entry(var.to_owned()).or_default() |= required;
    }
    fn merge(&mut self, other: &EnvUse) {
        for (var, required) in &other.vars {
            self.read(var, *required);
        }
        self.addrs.extend(other.addrs.clone());
    }
}

/// Rust source without its `#[cfg(test)]` tail (tests set variables freely)
/// and without line comments (docs mention variables they do not read).
fn production_source(text: &str) -> String {
    let code = text.split("#[cfg(test)]").next().unwrap_or_default();
    code.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display())) {
            let path = entry.expect("dir entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Names of the configuration helpers defined in `code`: `fn NAME<..>(var: &'static str ...) -> Result<`.
fn helpers_defined(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (i, _) in code.match_indices("fn ") {
        if i > 0 && code[..i].chars().next_back().is_some_and(is_ident) {
            continue;
        }
        let rest = &code[i + 3..];
        let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
        let mut after = &rest[name.len()..];
        if after.starts_with('<') {
            after = after.split_once('>').map(|(_, a)| a).unwrap_or("");
        }
        let signature = after.split('{').next().unwrap_or("");
        if signature.starts_with("(var: &'static str") && signature.contains("-> Result<") {
            names.insert(name);
        }
    }
    names
}

/// String literal arguments of calls `helper("NAME"` (optionally with a second
/// argument) for each helper, as (helper, NAME, second argument).
fn helper_calls<'a>(code: &'a str, helpers: &BTreeSet<String>) -> Vec<(String, String, &'a str)> {
    let mut calls = Vec::new();
    for helper in helpers {
        // rustfmt may break a long call after its parenthesis.
        let pattern = format!("{helper}(");
        for (i, _) in code.match_indices(&pattern) {
            let before = code[..i].chars().next_back();
            if before.is_some_and(is_ident) || code[..i].ends_with("fn ") {
                continue;
            }
            let Some(rest) = code[i + pattern.len()..].trim_start().strip_prefix('"') else {
                continue;
            };
            let Some((var, after)) = rest.split_once('"') else {
                continue;
            };
            if var.is_empty()
                || !var
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                continue;
            }
            let second = after
                .trim_start()
                .strip_prefix(',')
                .map(|a| a.trim_start())
                .unwrap_or("");
            calls.push((helper.clone(), var.to_owned(), second));
        }
    }
    calls
}

/// The default of `addr("X", default)`: a literal, or a `const` of the crate.
fn addr_default(second: &str, crate_code: &str) -> Option<String> {
    if let Some(lit) = second.strip_prefix('"') {
        return lit.split_once('"').map(|(v, _)| v.to_owned());
    }
    let ident: String = second.chars().take_while(|c| is_ident(*c)).collect();
    let decl = format!("const {ident}: &str = \"");
    let at = crate_code.find(&decl)?;
    crate_code[at + decl.len()..]
        .split_once('"')
        .map(|(v, _)| v.to_owned())
}

/// Everything `wxpay_runtime::config` offers: the helper names, and for each
/// of its functions that reads fixed variables, how a call to it looks and
/// what it reads.
struct SharedConfig {
    helpers: BTreeSet<String>,
    readers: Vec<(String, EnvUse)>,
}

fn shared_config() -> SharedConfig {
    let code = production_source(&read(&workspace_root().join("runtime/src/config.rs")));
    let helpers = helpers_defined(&code);
    let mut readers = Vec::new();
    let mut current_impl: Option<String> = None;
    let mut current: Option<(String, String)> = None; // (call marker, body)
    let flush = |current: &mut Option<(String, String)>, readers: &mut Vec<(String, EnvUse)>| {
        if let Some((marker, body)) = current.take() {
            let mut used = EnvUse::default();
            for (helper, var, _) in helper_calls(&body, &helpers) {
                used.read(&var, helper == "required");
            }
            // Kept even when it reads nothing itself: it may only call readers
            // (`merchants()` calls `merchant_from_env()` and `merchants_file()`).
            readers.push((marker, used));
        }
    };
    for line in code.lines() {
        if let Some(rest) = line.strip_prefix("impl ") {
            current_impl = Some(rest.chars().take_while(|c| is_ident(*c)).collect());
        } else if line == "}" {
            flush(&mut current, &mut readers);
            current_impl = None;
        }
        let trimmed = line.trim_start();
        if let Some(rest) = trimmed
            .strip_prefix("pub fn ")
            .or_else(|| trimmed.strip_prefix("fn "))
        {
            flush(&mut current, &mut readers);
            let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
            let marker = match &current_impl {
                Some(ty) => format!("{ty}::{name}("),
                None => format!("::{name}("),
            };
            current = Some((marker, String::new()));
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    flush(&mut current, &mut readers);
    // A reader that calls another (`WechatConfig::from_env` calls
    // `merchant_from_env`) also reads what that one reads.
    let bodies: Vec<String> = {
        let mut bodies = Vec::new();
        let mut current_body: Option<(String, String)> = None;
        for line in code.lines() {
            let trimmed = line.trim_start();
            if let Some(rest) = trimmed
                .strip_prefix("pub fn ")
                .or_else(|| trimmed.strip_prefix("fn "))
            {
                if let Some(done) = current_body.take() {
                    bodies.push(done);
                }
                let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
                current_body = Some((name, String::new()));
            } else if let Some((_, body)) = current_body.as_mut() {
                body.push_str(line);
                body.push('\n');
            }
        }
        bodies.extend(current_body);
        bodies
            .into_iter()
            .map(|(name, body)| format!("{name}\0{body}"))
            .collect()
    };
    let snapshot = readers.clone();
    for (marker, used) in readers.iter_mut() {
        let name = marker
            .rsplit("::")
            .next()
            .unwrap_or(marker)
            .trim_end_matches('(');
        let Some(body) = bodies
            .iter()
            .find_map(|b| b.strip_prefix(&format!("{name}\0")))
        else {
            continue;
        };
        for (other, reads) in &snapshot {
            let other_call = format!(
                "{}(",
                other
                    .rsplit("::")
                    .next()
                    .unwrap_or(other)
                    .trim_end_matches('(')
            );
            if other != marker && body.contains(&other_call) {
                used.merge(reads);
            }
        }
    }
    SharedConfig { helpers, readers }
}

/// The variables every binary may read besides its own: the logging setup
/// (`wxpay_runtime::telemetry`), which every `main` calls.
fn telemetry_vars() -> BTreeSet<String> {
    let code = production_source(&read(&workspace_root().join("runtime/src/telemetry.rs")));
    let mut vars: BTreeSet<String> = code
        .match_indices("env::var(\"")
        .filter_map(|(i, m)| {
            code[i + m.len()..]
                .split_once('"')
                .map(|(v, _)| v.to_owned())
        })
        .collect();
    if code.contains("from_default_env") {
        // tracing-subscriber's EnvFilter default variable.
        vars.insert("RUST_LOG".to_owned());
    }
    vars
}

/// Scans a binary's crate for what it reads.
fn env_use(bin: &Bin, shared: &SharedConfig) -> EnvUse {
    let files = rust_files(&bin.src_dir);
    let shared_path = workspace_root().join("runtime/src/config.rs");
    let code: String = files
        .iter()
        // wxpay-runtime's config.rs defines the shared helpers; what they
        // read counts only where they are called.
        .filter(|f| f.canonicalize().ok() != shared_path.canonicalize().ok())
        .map(|f| production_source(&read(f)))
        .collect::<Vec<_>>()
        .join("\n");
    let mut helpers = shared.helpers.clone();
    helpers.extend(helpers_defined(&code));
    let mut used = EnvUse::default();
    for (helper, var, second) in helper_calls(&code, &helpers) {
        used.read(&var, helper == "required");
        if helper == "addr" {
            let default = addr_default(second, &code)
                .unwrap_or_else(|| panic!("cannot find the default of {var}"));
            used.addrs.insert(var, default);
        }
    }
    for (marker, reads) in &shared.readers {
        if code.contains(marker.as_str()) {
            used.merge(reads);
        }
    }
    if code.contains("telemetry::init") {
        for var in telemetry_vars() {
            used.read(&var, false);
        }
    }
    used
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

/// `scheme://host:port...` → (host, port).
fn url_host_port(value: &str) -> Option<(String, u16)> {
    let rest = value.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit('@').next()?;
    let (host, port) = authority.rsplit_once(':')?;
    Some((host.to_owned(), port.parse().ok()?))
}

/// Every disagreement between `compose` (and `dockerfile`) and the code.
fn problems(compose: &Compose, dockerfile: &str) -> Vec<String> {
    let bins = workspace_bins();
    let shared = shared_config();
    let mut problems = Vec::new();
    let mut uses: BTreeMap<&str, EnvUse> = BTreeMap::new();

    for (name, service) in &compose.services {
        let Some(build) = &service.build else {
            continue;
        };
        let Some(target) = &build.target else {
            problems.push(format!(
                "{name}: build has no target (the Dockerfile has one per binary)"
            ));
            continue;
        };
        let Some(bin) = bins.get(target) else {
            problems.push(format!(
                "{name}: build target {target:?} is not a [[bin]] of the workspace"
            ));
            continue;
        };
        if !dockerfile.contains(&format!(" AS {target}\n"))
            || !dockerfile.contains(&format!("target/release/{target} "))
        {
            problems.push(format!(
                "{name}: the Dockerfile has no stage {target:?} copying that binary"
            ));
        }
        let used = env_use(bin, &shared);

        for (var, required) in &used.vars {
            let value = service.env(var);
            let empty = value
                .as_deref()
                .is_none_or(|v| v.is_empty() || v.ends_with(":-}"));
            if *required && empty {
                problems.push(format!(
                    "{name}: {target} requires {var}, which compose does not set"
                ));
            }
        }
        for var in service.environment.keys() {
            if !used.vars.contains_key(var) {
                problems.push(format!("{name}: {var} is set but {target} never reads it"));
            }
        }

        let mut listen_ports = BTreeSet::new();
        for (var, default) in &used.addrs {
            let addr = service.env(var).unwrap_or_else(|| default.clone());
            if addr.starts_with("127.")
                || addr.starts_with("localhost")
                || addr.starts_with("[::1]")
            {
                problems.push(format!(
                    "{name}: {var} = {addr} listens on loopback, unreachable from other containers"
                ));
            }
            match port_of(&addr) {
                Some(port) => {
                    listen_ports.insert(port);
                }
                None => problems.push(format!("{name}: {var} = {addr} has no port")),
            }
        }
        if service.ports.is_empty() {
            problems.push(format!("{name}: no published port"));
        }
        for (host, container) in service.published() {
            if !listen_ports.contains(&container) {
                problems.push(format!(
                    "{name}: publishes container port {container}, but {target} listens on {listen_ports:?}"
                ));
            }
            if host != container {
                problems.push(format!(
                    "{name}: publishes {container} as {host}; keep the documented port"
                ));
            }
            let probe = service
                .healthcheck
                .as_ref()
                .map(|h| h.test.join(" "))
                .unwrap_or_default();
            if !probe.contains(&format!("/{container}"))
                && !probe.contains(&format!(":{container}"))
            {
                problems.push(format!(
                    "{name}: the health check does not probe port {container}"
                ));
            }
        }
        if service.ports.len() != service.published().len() {
            problems.push(format!(
                "{name}: ports must be \"HOST:CONTAINER\": {:?}",
                service.ports
            ));
        }
        uses.insert(name, used);
    }

    for (name, service) in &compose.services {
        for (dependency, d) in &service.depends_on {
            match compose.services.get(dependency) {
                None => problems.push(format!("{name}: depends on unknown service {dependency}")),
                Some(dep) if d.condition == "service_healthy" && dep.healthcheck.is_none() => {
                    problems.push(format!(
                        "{name}: waits for {dependency} to be healthy, which has no health check"
                    ))
                }
                Some(_) => {}
            }
        }
        for (var, value) in &service.environment {
            let Some((host, port)) = value.as_str().and_then(url_host_port) else {
                continue;
            };
            if host == "127.0.0.1" || host == "localhost" {
                problems.push(format!(
                    "{name}: {var} points at loopback, i.e. at this container"
                ));
                continue;
            }
            let Some(target) = compose.services.get(&host) else {
                problems.push(format!(
                    "{name}: {var} points at {host}, which is not a service"
                ));
                continue;
            };
            if let Some(used) = uses.get(host.as_str()) {
                let listens = used.addrs.iter().any(|(addr_var, default)| {
                    port_of(&target.env(addr_var).unwrap_or_else(|| default.clone())) == Some(port)
                });
                if !listens {
                    problems.push(format!(
                        "{name}: {var} uses port {port}, where {host} does not listen"
                    ));
                }
            }
        }
    }
    problems
}

fn real_files() -> (Compose, String) {
    let root = workspace_root();
    (
        load_compose(&read(&root.join("docker-compose.yml"))),
        read(&root.join("Dockerfile")),
    )
}

#[test]
fn compose_file_agrees_with_the_binaries_config() {
    let (compose, dockerfile) = real_files();
    let problems = problems(&compose, &dockerfile);
    assert!(
        problems.is_empty(),
        "docker-compose.yml vs the code:\n{}",
        problems.join("\n")
    );
}

#[test]
fn compose_runs_each_binary_of_the_split_deployment() {
    let (compose, _) = real_files();
    let targets: BTreeSet<String> = compose
        .services
        .values()
        .filter_map(|s| s.build.as_ref()?.target.clone())
        .collect();
    let split: BTreeSet<String> = BINARIES.iter().map(|b| b.to_string()).collect();
    assert_eq!(targets, split, "one compose service per service binary");
    let bins = workspace_bins();
    for bin in BINARIES {
        assert!(
            bins.contains_key(bin),
            "{bin} is a [[bin]] of the workspace"
        );
    }
    for backing in ["postgres", "redis"] {
        assert!(compose.services.contains_key(backing), "{backing} service");
    }
}

#[test]
fn scanning_finds_the_variables_each_binary_reads() {
    // Guards the scanner itself: if it silently found nothing, the check above
    // would pass vacuously.
    let bins = workspace_bins();
    let shared = shared_config();
    let required = |bin: &str| -> BTreeSet<String> {
        env_use(&bins[bin], &shared)
            .vars
            .into_iter()
            .filter_map(|(v, r)| r.then_some(v))
            .collect()
    };
    let set = |vars: &[&str]| vars.iter().map(|v| v.to_string()).collect::<BTreeSet<_>>();
    assert!(required("payment-service").is_superset(&set(&[
        "DATABASE_URL",
        "REDIS_URL",
        "WECHAT_APP_ID",
        "WECHAT_MCH_ID",
        "WECHAT_API_KEY",
        "WECHAT_NOTIFY_URL",
    ])));
    assert!(required("poller").is_superset(&set(&[
        "DATABASE_URL",
        "REDIS_URL",
        "PAYMENT_SERVICE_URL"
    ])));
    assert!(
        !required("poller").contains("WECHAT_API_KEY"),
        "the poller needs no merchant key"
    );
    let sandbox = env_use(&bins["wechat-sandbox"], &shared);
    assert_eq!(port_of(&sandbox.addrs["SANDBOX_ADDR"]), Some(8090));
    assert_eq!(
        sandbox.vars.get("SANDBOX_TIME_FACTOR"),
        Some(&false),
        "optional"
    );
    let poller = env_use(&bins["poller"], &shared);
    assert!(
        poller.vars.contains_key("POLLER_FALLBACK_DELAY_MS"),
        "the poller's local helper"
    );
    assert!(
        poller.vars.contains_key("POLLER_FALLBACK_MAX_DELAY_MS"),
        "a call rustfmt broke over two lines"
    );
    assert!(poller.vars.contains_key("RUST_LOG"), "telemetry");
}

#[test]
fn the_check_reports_a_missing_variable_an_unknown_one_and_a_wrong_port() {
    let (mut compose, dockerfile) = real_files();
    let gateway = compose
        .services
        .get_mut("gateway")
        .expect("gateway service");
    gateway.environment.remove("DATABASE_URL");
    gateway
        .environment
        .insert("GATEWAY_PORT".into(), "8080".into());
    let poller = compose.services.get_mut("poller").expect("poller service");
    poller.ports = vec!["50053:50053".into()];
    let sandbox = compose
        .services
        .get_mut("wechat-sandbox")
        .expect("sandbox service");
    sandbox.environment.remove("SANDBOX_ADDR");

    let problems = problems(&compose, &dockerfile).join("\n");
    for expected in [
        "gateway: gateway requires DATABASE_URL",
        "gateway: GATEWAY_PORT is set but gateway never reads it",
        "poller: publishes container port 50053",
        "wechat-sandbox: SANDBOX_ADDR = 127.0.0.1:8090 listens on loopback",
    ] {
        assert!(
            problems.contains(expected),
            "{expected:?} not in:\n{problems}"
        );
    }
}
