//! The compose-consistency test: `docker-compose.yml` and `deploy/prometheus/prometheus.yml`
//! against what the binaries accept. No Docker engine runs where the tests run, so nothing
//! else would notice a misspelt variable (clap ignores variables it does not declare), a
//! flag a binary lost, a port that nothing listens on or a scrape target that hits nothing.
//!
//! The truth is each binary's own `--help` (clap prints `[env: COSTPIPE_X=]` beside every
//! setting), run from the built binaries (`cargo build --workspace --bins` first, or
//! `COSTPIPE_BIN_DIR`). Needs no stack, so it is not `#[ignore]`d. Every check collects its
//! problems and the test prints them all at once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use yaml_rust2::Yaml;

use costpipe_e2e::binary;
use costpipe_e2e::deploy::{
    help_of, interpolate, load_yaml, read_repo_file, repo_root, scalar, split_host_port,
    url_host_port, Help, Interpolated, VarRef,
};

/// The variable holding each service's `/metrics` address (the whole HTTP API's address
/// where metrics share it). Prometheus must scrape every service running one of these.
const METRICS_ADDRESS: &[(&str, &str)] = &[
    ("costpipe-aggregator", "COSTPIPE_AGGREGATOR_METRICS_ADDR"),
    ("costpipe-billing", "COSTPIPE_BILLING_ADDR"),
    ("costpipe-ingest-http", "COSTPIPE_INGEST_ADDR"),
    ("costpipe-gateway-example", "COSTPIPE_GATEWAY_ADDR"),
];

/// Settings a binary checks after parsing (clap cannot say they are required): without
/// them the service refuses to start.
const REQUIRED_SETTINGS: &[(&str, &str, &str)] = &[
    (
        "costpipe-ingest-http",
        "COSTPIPE_INGEST_API_KEYS",
        "the service refuses to start without an API key",
    ),
    (
        "costpipe-billing",
        "COSTPIPE_BILLING_ADMIN_KEY_SHA256",
        "billing refuses to listen beyond loopback without keys",
    ),
];

/// Variables whose loopback default is fine to leave: the service never reads them.
const UNUSED_LOOPBACK_DEFAULTS: &[(&str, &str)] = &[
    // Where the client subcommands find the API; `costpipe-billing` serving does not read it.
    ("costpipe-billing", "COSTPIPE_BILLING_URL"),
];

/// Variables other than `COSTPIPE_*` a costpipe binary reads.
const OTHER_VARIABLES: &[&str] = &["RUST_LOG", "RUST_BACKTRACE"];

/// One compose service after merge keys and interpolation.
struct Service {
    name: String,
    node: Yaml,
    /// `environment`, interpolated.
    env: BTreeMap<String, Interpolated>,
    /// `command`, interpolated, for a costpipe service (`costpipe-…` first).
    command: Vec<String>,
}

impl Service {
    fn is_costpipe(&self) -> bool {
        self.command
            .first()
            .is_some_and(|c| c.starts_with("costpipe-"))
    }

    fn binary(&self) -> &str {
        self.command.first().map(String::as_str).unwrap_or("")
    }

    fn env_value(&self, var: &str) -> Option<&str> {
        self.env.get(var).map(|v| v.value.as_str())
    }

    fn depends_on(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        match &self.node["depends_on"] {
            Yaml::Array(list) => {
                for item in list {
                    if let Some(name) = scalar(item) {
                        out.insert(name, "service_started".to_string());
                    }
                }
            }
            Yaml::Hash(h) => {
                for (k, v) in h {
                    if let Some(name) = scalar(k) {
                        let condition =
                            scalar(&v["condition"]).unwrap_or_else(|| "service_started".into());
                        out.insert(name, condition);
                    }
                }
            }
            _ => {}
        }
        out
    }
}

/// The compose file's services, or the problems that prevent reading them.
fn services(compose: &Yaml) -> Result<Vec<Service>, Vec<String>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    let Some(hash) = compose["services"].as_hash() else {
        return Err(vec!["docker-compose.yml has no services".into()]);
    };
    for (name, node) in hash {
        let Some(name) = scalar(name) else { continue };
        let mut env = BTreeMap::new();
        let mut entries = Vec::new();
        match &node["environment"] {
            Yaml::Hash(h) => {
                for (k, v) in h {
                    if let Some(k) = scalar(k) {
                        entries.push((k, scalar(v).unwrap_or_default()));
                    }
                }
            }
            Yaml::Array(list) => {
                for item in list {
                    let item = scalar(item).unwrap_or_default();
                    let (k, v) = item.split_once('=').unwrap_or((item.as_str(), ""));
                    entries.push((k.to_string(), v.to_string()));
                }
            }
            _ => {}
        }
        for (k, v) in entries {
            match interpolate(&v) {
                Ok(i) => {
                    env.insert(k, i);
                }
                Err(e) => problems.push(format!("{name}: {k}: {e}")),
            }
        }
        let raw_command: Vec<String> = match &node["command"] {
            Yaml::Array(list) => list.iter().filter_map(scalar).collect(),
            Yaml::String(s) => s.split_whitespace().map(str::to_string).collect(),
            _ => Vec::new(),
        };
        let mut command = Vec::new();
        for part in raw_command {
            match interpolate(&part) {
                Ok(i) => command.push(i.value),
                Err(e) => problems.push(format!("{name}: command: {e}")),
            }
        }
        out.push(Service {
            name,
            node: node.clone(),
            env,
            command,
        });
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

fn load_compose() -> (Yaml, Vec<Service>) {
    let compose = load_yaml("docker-compose.yml").unwrap_or_else(|e| panic!("{e}"));
    let services = services(&compose).unwrap_or_else(|p| panic!("{}", p.join("\n")));
    (compose, services)
}

fn report(what: &str, problems: &[String]) {
    assert!(
        problems.is_empty(),
        "{what}:\n  - {}",
        problems.join("\n  - ")
    );
}

/// The `help` of a binary's subcommand path, cached.
struct Helps(HashMap<(String, Vec<String>), Help>);

impl Helps {
    fn get(&mut self, bin: &str, path: &[String]) -> Result<&Help, String> {
        let key = (bin.to_string(), path.to_vec());
        if !self.0.contains_key(&key) {
            let help = help_of(&binary(bin), path)?;
            self.0.insert(key.clone(), help);
        }
        self.0.get(&key).ok_or_else(|| format!("no help for {bin}"))
    }
}

/// Listen ports of a costpipe service: the ports of the `*_ADDR` variables it sets.
fn listen_ports(service: &Service) -> BTreeSet<u16> {
    service
        .env
        .iter()
        .filter(|(k, _)| k.starts_with("COSTPIPE_") && k.ends_with("_ADDR"))
        .filter_map(|(_, v)| split_host_port(&v.value).map(|(_, p)| p))
        .collect()
}

/// The container port of a `ports:` entry (`"8088:8088"`, `"127.0.0.1:80:8088/tcp"`, long form).
fn container_port(entry: &Yaml) -> Result<u16, String> {
    let text = match entry {
        Yaml::Hash(_) => scalar(&entry["target"]).unwrap_or_default(),
        other => scalar(other).unwrap_or_default(),
    };
    let text = interpolate(&text)?.value;
    let last = text.rsplit(':').next().unwrap_or("");
    let last = last.split('/').next().unwrap_or("");
    last.parse()
        .map_err(|_| format!("ports entry {text:?} has no container port"))
}

/// Ports a health check asks on the container itself (`127.0.0.1:N`, `localhost:N`).
fn health_check_ports(service: &Service) -> Vec<u16> {
    let text = match &service.node["healthcheck"]["test"] {
        Yaml::Array(list) => list.iter().filter_map(scalar).collect::<Vec<_>>().join(" "),
        other => scalar(other).unwrap_or_default(),
    };
    let mut ports = Vec::new();
    for host in ["127.0.0.1:", "localhost:"] {
        for (i, _) in text.match_indices(host) {
            let digits: String = text[i + host.len()..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            if let Ok(p) = digits.parse() {
                ports.push(p);
            }
        }
    }
    ports
}

/// Walks a command's arguments through the binary's options and subcommands; returns the
/// subcommand path and the long options given.
fn walk_arguments(
    helps: &mut Helps,
    service: &Service,
    problems: &mut Vec<String>,
) -> Result<(Vec<String>, BTreeSet<String>), String> {
    let bin = service.binary();
    let mut path: Vec<String> = Vec::new();
    let mut given = BTreeSet::new();
    let args = &service.command[1..];
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        let help = helps.get(bin, &path)?;
        if let Some(option) = arg.strip_prefix("--") {
            let (name, inline) = match option.split_once('=') {
                Some((n, _)) => (n, true),
                None => (option, false),
            };
            match help.options.get(name) {
                None => problems.push(format!(
                    "{}: `{bin} {}` has no option --{name}",
                    service.name,
                    path.join(" ")
                )),
                Some(true) if !inline => {
                    if i + 1 >= args.len() {
                        problems.push(format!("{}: --{name} needs a value", service.name));
                    }
                    i += 1;
                }
                Some(_) => {}
            }
            given.insert(name.to_string());
        } else if arg.starts_with('-') {
            problems.push(format!(
                "{}: {arg:?}: write long options in the compose file",
                service.name
            ));
        } else if help.subcommands.contains(arg.as_str()) {
            path.push(arg.clone());
        } else {
            problems.push(format!(
                "{}: `{bin} {}` has no subcommand or argument {arg:?}",
                service.name,
                path.join(" ")
            ));
        }
        i += 1;
    }
    Ok((path, given))
}

/// Every check of one costpipe service against its binary; returns the variables the
/// binary accepts with their help blocks (for the topic checks).
fn check_service(
    helps: &mut Helps,
    service: &Service,
    all: &BTreeMap<String, &Service>,
    dockerfile: &str,
    problems: &mut Vec<String>,
) -> Result<BTreeMap<String, String>, String> {
    let bin = service.binary().to_string();
    let name = &service.name;
    if !dockerfile.contains(&format!("/release/{bin} "))
        && !dockerfile.contains(&format!("/release/{bin}\n"))
    {
        problems.push(format!(
            "{name}: the Dockerfile does not copy {bin} into the image"
        ));
    }
    let (path, given) = walk_arguments(helps, service, problems)?;
    // What the binary accepts along the subcommand path (clap reads a parent's variables
    // too).
    let mut accepted: BTreeMap<String, costpipe_e2e::deploy::OptionHelp> = BTreeMap::new();
    let mut required = BTreeSet::new();
    for depth in 0..=path.len() {
        let help = helps.get(&bin, &path[..depth])?;
        accepted.extend(help.env.clone());
        required.extend(help.required.iter().cloned());
    }

    for (var, value) in &service.env {
        if var.starts_with("COSTPIPE_") {
            if !accepted.contains_key(var) {
                problems.push(format!(
                    "{name}: sets {var}, which {bin} does not read (not in its --help)"
                ));
            }
        } else if !OTHER_VARIABLES.contains(&var.as_str()) {
            problems.push(format!(
                "{name}: sets {var}, which is not a costpipe setting"
            ));
        }
        if value.value.is_empty()
            && REQUIRED_SETTINGS
                .iter()
                .any(|(b, v, _)| *b == bin && v == var)
        {
            problems.push(format!(
                "{name}: {var} is empty when unset; use ${{{var}:?…}} so compose refuses to start without it"
            ));
        }
    }

    for (b, var, why) in REQUIRED_SETTINGS {
        if *b == bin && !service.env.contains_key(*var) {
            problems.push(format!("{name}: {var} is not set ({why})"));
        }
    }
    for option in &required {
        let by_env = accepted
            .iter()
            .any(|(var, h)| &h.long == option && service.env.contains_key(var));
        if !given.contains(option) && !by_env {
            problems.push(format!(
                "{name}: {bin} requires --{option}, which is not given"
            ));
        }
    }

    let own_ports = listen_ports(service);
    for (var, help) in &accepted {
        let set = service.env.get(var);
        if var.ends_with("_ADDR") {
            // A listen address: its default is loopback, unreachable from other containers.
            match set.and_then(|v| split_host_port(&v.value)) {
                None => problems.push(format!(
                    "{name}: {var} (a listen address) must be set to 0.0.0.0:<port>"
                )),
                Some((host, _)) if host != "0.0.0.0" && host != "::" => problems.push(format!(
                    "{name}: {var} listens on {host}, unreachable from other containers"
                )),
                Some(_) => {}
            }
            continue;
        }
        let loopback_default = help
            .default
            .as_deref()
            .is_some_and(|d| d.contains("127.0.0.1") || d.contains("localhost"));
        let unused = UNUSED_LOOPBACK_DEFAULTS.contains(&(bin.as_str(), var.as_str()));
        if loopback_default && set.is_none() && !unused {
            problems.push(format!(
                "{name}: {var} is not set and defaults to {:?}: the container itself",
                help.default.as_deref().unwrap_or("")
            ));
        }
    }

    // Addresses of other services: the host must be a service and, for a costpipe service,
    // the port one it listens on. An advertised URL must name this very service.
    for (var, value) in &service.env {
        if value.is_required_input() {
            continue;
        }
        let targets: Vec<(String, u16)> = if var == "COSTPIPE_KAFKA_BROKERS" {
            value
                .value
                .split(',')
                .filter_map(|b| split_host_port(b.trim()))
                .collect()
        } else if var.ends_with("_URL") {
            url_host_port(&value.value).into_iter().collect()
        } else {
            Vec::new()
        };
        for (host, port) in targets {
            if var.ends_with("_ADVERTISED_URL") {
                if &host != name || !own_ports.contains(&port) {
                    problems.push(format!(
                        "{name}: {var}={} must name this service and a port it listens on ({name}:{own_ports:?})",
                        value.value
                    ));
                }
                continue;
            }
            match all.get(&host) {
                None => problems.push(format!(
                    "{name}: {var} points at {host}, which is not a service"
                )),
                Some(target) if target.is_costpipe() => {
                    let ports = listen_ports(target);
                    if !ports.contains(&port) {
                        problems.push(format!(
                            "{name}: {var} points at {host}:{port}, but {host} listens on {ports:?}"
                        ));
                    }
                }
                Some(_) => {}
            }
        }
    }
    let replicas = service.node["deploy"]["replicas"].as_i64().unwrap_or(1);
    if replicas > 1 && service.env.keys().any(|k| k.ends_with("_ADVERTISED_URL")) {
        problems.push(format!(
            "{name}: {replicas} replicas share one advertised URL; run one service per instance"
        ));
    }

    if let Some(ports) = service.node["ports"].as_vec() {
        for entry in ports {
            match container_port(entry) {
                Ok(p) if !own_ports.contains(&p) => problems.push(format!(
                    "{name}: publishes port {p}, but {bin} listens on {own_ports:?}"
                )),
                Ok(_) => {}
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
    }
    let is_scraped = METRICS_ADDRESS.iter().any(|(b, _)| *b == bin);
    let checked = health_check_ports(service);
    if is_scraped && checked.is_empty() {
        problems.push(format!("{name}: no health check asks the service itself"));
    }
    for p in checked {
        if !own_ports.contains(&p) {
            problems.push(format!(
                "{name}: the health check asks port {p}, but {bin} listens on {own_ports:?}"
            ));
        }
    }

    Ok(accepted
        .into_iter()
        .map(|(var, help)| (var, help.text))
        .collect())
}

/// The topics the costpipe services use exist before they start: the topic-creating
/// one-shot service creates each (compacted exactly where a binary's help says the topic
/// is compacted) and every service using a topic waits for it.
fn check_topics(
    services: &[Service],
    accepted: &BTreeMap<String, BTreeMap<String, String>>,
    problems: &mut Vec<String>,
) {
    let Some(init) = services.iter().find(|s| {
        !s.is_costpipe()
            && match &s.node["command"] {
                Yaml::Array(list) => list
                    .iter()
                    .filter_map(scalar)
                    .any(|c| c.contains("kafka-topics.sh")),
                other => scalar(other).is_some_and(|c| c.contains("kafka-topics.sh")),
            }
    }) else {
        problems.push("no service creates the topics (kafka-topics.sh)".into());
        return;
    };
    let script: String = match &init.node["command"] {
        Yaml::Array(list) => list
            .iter()
            .filter_map(scalar)
            .map(|c| interpolate(&c).map(|i| i.value).unwrap_or(c))
            .collect::<Vec<_>>()
            .join("\n"),
        other => scalar(other).unwrap_or_default(),
    };
    // topic name -> (must be compacted, services using it)
    let mut topics: BTreeMap<String, (bool, Vec<&str>)> = BTreeMap::new();
    for s in services.iter().filter(|s| s.is_costpipe()) {
        let Some(vars) = accepted.get(&s.name) else {
            continue;
        };
        for (var, value) in &s.env {
            if !var.ends_with("_TOPIC") {
                continue;
            }
            let compacted = vars.get(var).is_some_and(|t| t.contains("ompacted"));
            let entry = topics.entry(value.value.clone()).or_default();
            entry.0 |= compacted;
            entry.1.push(&s.name);
        }
        if s.env.keys().any(|v| v.ends_with("_TOPIC"))
            && s.depends_on().get(&init.name).map(String::as_str)
                != Some("service_completed_successfully")
        {
            problems.push(format!(
                "{}: uses topics but does not wait for {} (condition: service_completed_successfully)",
                s.name, init.name
            ));
        }
    }
    for (topic, (compacted, users)) in &topics {
        let var = init
            .env
            .iter()
            .find(|(_, v)| &v.value == topic)
            .map(|(k, _)| k.clone());
        let Some(var) = var else {
            problems.push(format!(
                "{} does not create topic {topic} (used by {users:?})",
                init.name
            ));
            continue;
        };
        let line = script.lines().find(|l| {
            l.match_indices(&format!("${var}")).any(|(i, m)| {
                !l[i + m.len()..].starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_')
            })
        });
        match line {
            None => problems.push(format!(
                "{} has {var}={topic} but its script never uses ${var}",
                init.name
            )),
            Some(l) => {
                let is_compact = l.contains("cleanup.policy=compact");
                if *compacted && !is_compact {
                    problems.push(format!(
                        "{}: topic {topic} must be compacted (the binaries say so) but is created without cleanup.policy=compact",
                        init.name
                    ));
                }
                if !*compacted && is_compact {
                    problems.push(format!(
                        "{}: topic {topic} is created compacted; compaction would drop its records",
                        init.name
                    ));
                }
            }
        }
    }
}

#[test]
fn compose_matches_the_binaries() {
    let (_, services) = load_compose();
    let dockerfile = read_repo_file("Dockerfile").unwrap_or_else(|e| panic!("{e}"));
    let by_name: BTreeMap<String, &Service> =
        services.iter().map(|s| (s.name.clone(), s)).collect();
    let mut helps = Helps(HashMap::new());
    let mut problems = Vec::new();
    let mut accepted = BTreeMap::new();
    for service in services.iter().filter(|s| s.is_costpipe()) {
        match check_service(&mut helps, service, &by_name, &dockerfile, &mut problems) {
            Ok(vars) => {
                accepted.insert(service.name.clone(), vars);
            }
            Err(e) => problems.push(format!("{}: {e}", service.name)),
        }
    }
    assert!(
        !accepted.is_empty() || !problems.is_empty(),
        "docker-compose.yml runs no costpipe binary"
    );
    check_topics(&services, &accepted, &mut problems);
    report("docker-compose.yml disagrees with the binaries", &problems);
}

#[test]
fn compose_references_are_whole() {
    let (compose, services) = load_compose();
    let mut problems = Vec::new();

    // One default per variable, and none left to be silently empty.
    let mut defaults: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    fn walk(node: &Yaml, out: &mut Vec<String>) {
        match node {
            Yaml::Array(a) => a.iter().for_each(|n| walk(n, out)),
            Yaml::Hash(h) => h.iter().for_each(|(k, v)| {
                walk(k, out);
                walk(v, out);
            }),
            other => out.extend(scalar(other)),
        }
    }
    let mut scalars = Vec::new();
    walk(&compose["services"], &mut scalars);
    for text in &scalars {
        match interpolate(text) {
            Ok(i) => {
                for (var, r) in i.refs {
                    match r {
                        VarRef::Default(d) => {
                            defaults.entry(var).or_default().insert(d);
                        }
                        VarRef::Bare => problems.push(format!(
                            "{text:?}: ${{{var}}} has no default and is not required (${{{var}:?…}})"
                        )),
                        VarRef::Required => {}
                    }
                }
            }
            Err(e) => problems.push(e),
        }
    }
    for (var, ds) in &defaults {
        if ds.len() > 1 {
            problems.push(format!("{var} has several defaults: {ds:?}"));
        }
    }

    let names: BTreeSet<&str> = services.iter().map(|s| s.name.as_str()).collect();
    let volumes: BTreeSet<String> = compose["volumes"]
        .as_hash()
        .map(|h| h.keys().filter_map(scalar).collect())
        .unwrap_or_default();
    for s in &services {
        for dep in s.depends_on().keys() {
            if !names.contains(dep.as_str()) {
                problems.push(format!(
                    "{}: depends on {dep}, which is not a service",
                    s.name
                ));
            }
        }
        for v in s.node["volumes"].as_vec().into_iter().flatten() {
            let Some(spec) = scalar(v) else { continue };
            let source = spec.split(':').next().unwrap_or("");
            if source.starts_with("./") || source.starts_with('/') {
                if !repo_root().join(source).exists() {
                    problems.push(format!("{}: mounts {source}, which does not exist", s.name));
                }
            } else if !volumes.contains(source) {
                problems.push(format!("{}: volume {source} is not declared", s.name));
            }
        }
    }

    // Two aggregators in one consumer group (the production shape).
    let groups: Vec<String> = services
        .iter()
        .filter(|s| s.binary() == "costpipe-aggregator")
        .map(|s| {
            s.env_value("COSTPIPE_GROUP_ID")
                .unwrap_or("costpipe-aggregator")
                .to_string()
        })
        .collect();
    let instances: usize = groups.len();
    if instances < 2 || groups.iter().collect::<BTreeSet<_>>().len() != 1 {
        problems.push(format!(
            "expected at least two aggregators in one consumer group, found groups {groups:?}"
        ));
    }
    report("docker-compose.yml", &problems);
}

#[test]
fn prometheus_scrapes_every_service() {
    let (_, services) = load_compose();
    let prometheus =
        load_yaml("deploy/prometheus/prometheus.yml").unwrap_or_else(|e| panic!("{e}"));
    let mut problems = Vec::new();
    let mut targets: BTreeSet<(String, u16)> = BTreeSet::new();
    for job in prometheus["scrape_configs"].as_vec().into_iter().flatten() {
        for sc in job["static_configs"].as_vec().into_iter().flatten() {
            for t in sc["targets"].as_vec().into_iter().flatten() {
                match scalar(t).as_deref().and_then(split_host_port) {
                    Some(target) => {
                        targets.insert(target);
                    }
                    None => problems.push(format!("target {t:?} is not host:port")),
                }
            }
        }
    }
    let by_name: BTreeMap<&str, &Service> = services.iter().map(|s| (s.name.as_str(), s)).collect();
    for (host, port) in &targets {
        if host == "localhost" {
            continue;
        }
        match by_name.get(host.as_str()) {
            None => problems.push(format!("target {host}:{port}: no such compose service")),
            Some(s) => {
                let metrics = METRICS_ADDRESS.iter().find(|(b, _)| *b == s.binary());
                let want = metrics
                    .and_then(|(_, var)| s.env_value(var))
                    .and_then(split_host_port)
                    .map(|(_, p)| p);
                if want != Some(*port) {
                    problems.push(format!(
                        "target {host}:{port}: {host} serves /metrics on {want:?}"
                    ));
                }
            }
        }
    }
    for s in &services {
        let Some((_, var)) = METRICS_ADDRESS.iter().find(|(b, _)| *b == s.binary()) else {
            continue;
        };
        match s.env_value(var).and_then(split_host_port) {
            Some((_, port)) if targets.contains(&(s.name.clone(), port)) => {}
            Some((_, port)) => problems.push(format!(
                "{}: Prometheus does not scrape {}:{port}",
                s.name, s.name
            )),
            None => problems.push(format!("{}: {var} is not set", s.name)),
        }
    }
    // The configuration Prometheus loads is this file, and its rule files exist.
    let prom = services
        .iter()
        .find(|s| scalar(&s.node["image"]).is_some_and(|i| i.starts_with("prom/prometheus")));
    match prom {
        None => problems.push("no Prometheus service".into()),
        Some(p) => {
            let mounts: Vec<String> = p.node["volumes"]
                .as_vec()
                .into_iter()
                .flatten()
                .filter_map(scalar)
                .collect();
            if !mounts
                .iter()
                .any(|m| m.starts_with("./deploy/prometheus:/etc/prometheus"))
            {
                problems.push(format!(
                    "prometheus does not mount ./deploy/prometheus at /etc/prometheus: {mounts:?}"
                ));
            }
        }
    }
    for rules in prometheus["rule_files"].as_vec().into_iter().flatten() {
        let Some(rules) = scalar(rules) else { continue };
        if !Path::new(&repo_root().join("deploy/prometheus").join(&rules)).exists() {
            problems.push(format!(
                "rule file {rules} does not exist beside prometheus.yml"
            ));
        }
    }
    report("deploy/prometheus/prometheus.yml", &problems);
}
