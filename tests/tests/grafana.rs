//! Grafana's provisioning (`deploy/grafana/`) against itself, the compose file and the
//! ClickHouse migrations: every dashboard is valid JSON, every data source a panel, query or
//! variable names is provisioned (by uid, with the same type), every ClickHouse table a
//! query reads is created by `schemas/clickhouse/`, and the compose file mounts the files
//! where the provisioning expects them and installs the plugin; Grafana reads ClickHouse as
//! a read-only user (`deploy/clickhouse/users.d/`) that is not the pipeline's. Needs neither
//! binaries nor a stack.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use costpipe_e2e::deploy::{interpolate, load_yaml, read_repo_file, repo_root, scalar};

const PROVISIONING: &str = "deploy/grafana/provisioning";
const DASHBOARDS: &str = "deploy/grafana/dashboards";

fn files_in(relative: &str, extension: &str) -> Vec<String> {
    let dir = repo_root().join(relative);
    let mut out: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(extension))
        .map(|n| format!("{relative}/{n}"))
        .collect();
    out.sort();
    out
}

/// Provisioned data sources: uid → type.
fn datasources(problems: &mut Vec<String>) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for file in files_in(&format!("{PROVISIONING}/datasources"), ".yml") {
        let yaml = load_yaml(&file).unwrap_or_else(|e| panic!("{e}"));
        for ds in yaml["datasources"].as_vec().into_iter().flatten() {
            match (scalar(&ds["uid"]), scalar(&ds["type"])) {
                (Some(uid), Some(kind)) => {
                    if out.insert(uid.clone(), kind).is_some() {
                        problems.push(format!("{file}: data source uid {uid} defined twice"));
                    }
                }
                _ => problems.push(format!("{file}: a data source without uid or type")),
            }
        }
    }
    out
}

/// Tables the migrations create (`CREATE TABLE [IF NOT EXISTS] {db}.name`).
fn migration_tables() -> BTreeSet<String> {
    let mut tables = BTreeSet::new();
    for file in files_in("schemas/clickhouse", ".sql") {
        let sql = read_repo_file(&file).unwrap_or_else(|e| panic!("{e}"));
        for (i, _) in sql.match_indices("{db}.") {
            let before = sql[..i].trim_end().to_ascii_uppercase();
            let creates =
                before.ends_with("CREATE TABLE IF NOT EXISTS") || before.ends_with("CREATE TABLE");
            if creates {
                let name: String = sql[i + 5..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                tables.insert(name);
            }
        }
    }
    tables
}

/// The tables an SQL text reads: the word after each `FROM` or `JOIN`, unless a subquery.
fn tables_read(sql: &str) -> Vec<String> {
    let words: Vec<&str> = sql.split_whitespace().collect();
    let mut out = Vec::new();
    for pair in words.windows(2) {
        let keyword = pair[0].to_ascii_uppercase();
        if (keyword == "FROM" || keyword == "JOIN") && !pair[1].starts_with('(') {
            let name: String = pair[1]
                .trim_matches('`')
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_' || *c == '.')
                .collect();
            out.push(name);
        }
    }
    out
}

/// Checks a `datasource` reference (`{"type", "uid"}`) against the provisioned ones.
fn check_datasource(
    where_: &str,
    ds: &Value,
    provisioned: &BTreeMap<String, String>,
    problems: &mut Vec<String>,
) -> Option<String> {
    let uid = ds["uid"].as_str();
    let kind = ds["type"].as_str();
    match (uid, kind) {
        // `-- Grafana --` and mixed panels name no provisioned source.
        (Some("-- Grafana --" | "-- Mixed --" | "grafana"), _) => None,
        (Some(uid), _) if uid.starts_with("${") => {
            problems.push(format!(
                "{where_}: data source {uid} is a variable; name a provisioned uid"
            ));
            None
        }
        (Some(uid), kind) => match provisioned.get(uid) {
            None => {
                problems.push(format!(
                    "{where_}: data source uid {uid} is not provisioned"
                ));
                None
            }
            Some(t) if kind.is_some_and(|k| k != t) => {
                problems.push(format!(
                    "{where_}: data source {uid} is a {t}, the dashboard says {}",
                    kind.unwrap_or("")
                ));
                None
            }
            Some(t) => Some(t.clone()),
        },
        (None, _) => {
            problems.push(format!("{where_}: no data source uid"));
            None
        }
    }
}

fn check_sql(where_: &str, sql: &str, tables: &BTreeSet<String>, problems: &mut Vec<String>) {
    if sql.trim().is_empty() {
        problems.push(format!("{where_}: empty SQL"));
    }
    for table in tables_read(sql) {
        if table.contains('.') {
            problems.push(format!(
                "{where_}: reads {table}; name tables without a database (the data source's default database is costpipe's)"
            ));
        } else if !tables.contains(&table) {
            problems.push(format!(
                "{where_}: reads table {table}, which no migration in schemas/clickhouse/ creates"
            ));
        }
    }
}

fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p);
        // Collapsed rows keep their panels inside.
        out.extend(p["panels"].as_array().into_iter().flatten());
    }
    out
}

#[test]
fn dashboards_use_provisioned_sources_and_existing_tables() {
    let mut problems = Vec::new();
    let provisioned = datasources(&mut problems);
    let tables = migration_tables();
    assert!(
        tables.contains("usage_cost_hour"),
        "no tables found in the migrations: {tables:?}"
    );
    let files = files_in(DASHBOARDS, ".json");
    assert!(!files.is_empty(), "no dashboards in {DASHBOARDS}");
    let mut uids = BTreeSet::new();
    let mut clickhouse_queries = 0;
    for file in &files {
        let text = read_repo_file(file).unwrap_or_else(|e| panic!("{e}"));
        let dashboard: Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => {
                problems.push(format!("{file}: not valid JSON: {e}"));
                continue;
            }
        };
        match dashboard["uid"].as_str() {
            Some(uid) if uids.insert(uid.to_string()) => {}
            other => problems.push(format!("{file}: missing or repeated uid {other:?}")),
        }
        if dashboard["title"].as_str().is_none_or(str::is_empty) {
            problems.push(format!("{file}: no title"));
        }
        let mut ids = BTreeSet::new();
        for panel in panels(&dashboard) {
            let title = panel["title"].as_str().unwrap_or("?");
            let where_ = format!("{file}: panel {title:?}");
            if !panel["id"].as_i64().is_some_and(|id| ids.insert(id)) {
                problems.push(format!("{where_}: missing or repeated id"));
            }
            if panel["type"] == "row" {
                continue;
            }
            if panel["gridPos"]["w"].as_i64().is_none() {
                problems.push(format!("{where_}: no gridPos"));
            }
            if !panel["datasource"].is_null() {
                check_datasource(&where_, &panel["datasource"], &provisioned, &mut problems);
            }
            let targets = panel["targets"].as_array().cloned().unwrap_or_default();
            if targets.is_empty() {
                problems.push(format!("{where_}: no query"));
            }
            for target in &targets {
                // A target without its own data source uses the panel's.
                let ds = if target["datasource"].is_null() {
                    &panel["datasource"]
                } else {
                    &target["datasource"]
                };
                match check_datasource(&where_, ds, &provisioned, &mut problems).as_deref() {
                    Some("grafana-clickhouse-datasource") => {
                        clickhouse_queries += 1;
                        let sql = target["rawSql"].as_str().unwrap_or("");
                        check_sql(&where_, sql, &tables, &mut problems);
                    }
                    Some("prometheus")
                        if target["expr"].as_str().is_none_or(|e| e.trim().is_empty()) =>
                    {
                        problems.push(format!("{where_}: empty PromQL"));
                    }
                    _ => {}
                }
            }
        }
        for variable in dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let where_ = format!(
                "{file}: variable {}",
                variable["name"].as_str().unwrap_or("?")
            );
            if variable["type"] != "query" {
                continue;
            }
            let kind = check_datasource(
                &where_,
                &variable["datasource"],
                &provisioned,
                &mut problems,
            );
            if kind.as_deref() == Some("grafana-clickhouse-datasource") {
                let sql = variable["query"]
                    .as_str()
                    .or_else(|| variable["query"]["rawSql"].as_str())
                    .unwrap_or("");
                check_sql(&where_, sql, &tables, &mut problems);
            }
        }
    }
    assert!(
        clickhouse_queries > 0,
        "no dashboard reads ClickHouse (the cost views)"
    );
    assert!(
        problems.is_empty(),
        "Grafana dashboards:\n  - {}",
        problems.join("\n  - ")
    );
}

#[test]
fn compose_mounts_and_configures_grafana_as_provisioned() {
    let mut problems = Vec::new();
    let provisioned = datasources(&mut problems);
    let compose = load_yaml("docker-compose.yml").unwrap_or_else(|e| panic!("{e}"));
    let grafana = compose["services"]
        .as_hash()
        .into_iter()
        .flatten()
        .map(|(_, s)| s)
        .find(|s| scalar(&s["image"]).is_some_and(|i| i.starts_with("grafana/grafana")))
        .unwrap_or_else(|| panic!("docker-compose.yml has no grafana/grafana service"));
    let env: BTreeMap<String, String> = grafana["environment"]
        .as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((scalar(k)?, interpolate(&scalar(v)?).ok()?.value)))
        .collect();
    let mounts: Vec<(String, String)> = grafana["volumes"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(scalar)
        .filter_map(|m| {
            let mut parts = m.split(':');
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect();
    let mounted_at = |source: &str| {
        mounts
            .iter()
            .find(|(s, _)| s.trim_end_matches('/') == source)
            .map(|(_, t)| t.clone())
    };
    if mounted_at(&format!("./{PROVISIONING}")).as_deref() != Some("/etc/grafana/provisioning") {
        problems.push(format!(
            "grafana does not mount ./{PROVISIONING} at /etc/grafana/provisioning"
        ));
    }
    // The dashboard provider reads the directory the dashboards are mounted at.
    let dashboards_at = mounted_at(&format!("./{DASHBOARDS}"));
    for file in files_in(&format!("{PROVISIONING}/dashboards"), ".yml") {
        let yaml = load_yaml(&file).unwrap_or_else(|e| panic!("{e}"));
        for provider in yaml["providers"].as_vec().into_iter().flatten() {
            let path = scalar(&provider["options"]["path"]);
            if path.is_none() || path != dashboards_at {
                problems.push(format!(
                    "{file}: provider reads {path:?}, ./{DASHBOARDS} is mounted at {dashboards_at:?}"
                ));
            }
        }
    }
    // Plugins the data sources need are installed.
    let plugins = env.get("GF_INSTALL_PLUGINS").cloned().unwrap_or_default();
    for kind in provisioned.values().collect::<BTreeSet<_>>() {
        if kind.ends_with("-datasource") && !plugins.contains(kind.as_str()) {
            problems.push(format!("GF_INSTALL_PLUGINS does not install {kind}"));
        }
    }
    // Every ${VAR} the provisioning reads is in Grafana's environment.
    for file in files_in(&format!("{PROVISIONING}/datasources"), ".yml") {
        let text = read_repo_file(&file).unwrap_or_else(|e| panic!("{e}"));
        let text: String = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let refs = interpolate(&text).map(|i| i.refs).unwrap_or_else(|e| {
            problems.push(format!("{file}: {e}"));
            Vec::new()
        });
        for (var, _) in refs {
            if !env.contains_key(&var) {
                problems.push(format!(
                    "{file} reads ${{{var}}}, which the grafana service does not set"
                ));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "Grafana in docker-compose.yml:\n  - {}",
        problems.join("\n  - ")
    );
}

/// The inner text of the first `<tag>` (or `<tag attr…>`) element of `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = [format!("<{tag}>"), format!("<{tag} ")]
        .iter()
        .filter_map(|o| xml.find(o.as_str()))
        .min()?;
    let start = open + xml[open..].find('>')? + 1;
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(&xml[start..end])
}

/// `xml` without its `<!-- … -->` comments.
fn without_comments(xml: &str) -> String {
    let mut out = String::new();
    let mut rest = xml;
    while let Some(i) = rest.find("<!--") {
        out.push_str(&rest[..i]);
        rest = rest[i..].find("-->").map_or("", |j| &rest[i + j + 3..]);
    }
    out.push_str(rest);
    out
}

/// The service of docker-compose.yml whose image starts with `image`.
fn service_by_image(compose: &yaml_rust2::Yaml, image: &str) -> yaml_rust2::Yaml {
    compose["services"]
        .as_hash()
        .into_iter()
        .flatten()
        .map(|(_, s)| s)
        .find(|s| scalar(&s["image"]).is_some_and(|i| i.starts_with(image)))
        .unwrap_or_else(|| panic!("docker-compose.yml has no {image} service"))
        .clone()
}

/// A service's environment as written (`${VAR:-…}` not expanded).
fn raw_env(service: &yaml_rust2::Yaml) -> BTreeMap<String, String> {
    service["environment"]
        .as_hash()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((scalar(k)?, scalar(v)?)))
        .collect()
}

#[test]
fn grafana_reads_clickhouse_as_a_read_only_user() {
    // The ClickHouse data source's user and password variable.
    let mut login = None;
    for file in files_in(&format!("{PROVISIONING}/datasources"), ".yml") {
        let yaml = load_yaml(&file).unwrap_or_else(|e| panic!("{e}"));
        for ds in yaml["datasources"].as_vec().into_iter().flatten() {
            if scalar(&ds["type"]).as_deref() == Some("grafana-clickhouse-datasource") {
                login = Some((
                    scalar(&ds["jsonData"]["username"]).expect("a ClickHouse username"),
                    scalar(&ds["secureJsonData"]["password"]).expect("a ClickHouse password"),
                ));
            }
        }
    }
    let (user, password) = login.expect("a provisioned ClickHouse data source");
    let password_var = password
        .strip_prefix("${")
        .and_then(|p| p.strip_suffix('}'))
        .unwrap_or_else(|| panic!("the data source's password {password:?} is not one ${{VAR}}"))
        .to_string();

    let compose = load_yaml("docker-compose.yml").unwrap_or_else(|e| panic!("{e}"));
    let clickhouse = service_by_image(&compose, "clickhouse/clickhouse-server");
    let grafana = service_by_image(&compose, "grafana/grafana");
    let (ch_env, grafana_env) = (raw_env(&clickhouse), raw_env(&grafana));
    // Not the pipeline's own login.
    let pipeline_user = ch_env
        .get("CLICKHOUSE_USER")
        .map(|v| interpolate(v).expect("CLICKHOUSE_USER").value)
        .unwrap_or_else(|| "default".into());
    assert_ne!(
        user, pipeline_user,
        "Grafana logs in as the pipeline's user"
    );
    assert!(
        !grafana_env.contains_key("COSTPIPE_CLICKHOUSE_PASSWORD"),
        "Grafana is given the pipeline's ClickHouse password"
    );

    // The users.d files mounted into the ClickHouse server.
    let users_d: Vec<String> = clickhouse["volumes"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(scalar)
        .filter_map(|m| {
            let mut parts = m.split(':');
            let (source, target) = (parts.next()?, parts.next()?);
            target
                .starts_with("/etc/clickhouse-server/users.d/")
                .then(|| source.trim_start_matches("./").to_string())
        })
        .collect();
    let definition = users_d
        .iter()
        .map(|f| without_comments(&read_repo_file(f).unwrap_or_else(|e| panic!("{e}"))))
        .find(|xml| element(xml, "users").is_some_and(|u| element(u, &user).is_some()))
        .unwrap_or_else(|| {
            panic!("no users.d file mounted into clickhouse ({users_d:?}) defines user {user}")
        });
    let users = element(&definition, "users").expect("<users>");
    let entry = element(users, &user).expect("the user");
    let profile = element(entry, "profile")
        .unwrap_or_else(|| panic!("user {user} has no profile"))
        .trim();
    let profiles = element(&definition, "profiles").expect("<profiles>");
    let settings = element(profiles, profile)
        .unwrap_or_else(|| panic!("profile {profile} is not defined beside user {user}"));
    assert_eq!(
        element(settings, "readonly").map(str::trim),
        Some("1"),
        "profile {profile} is readonly = 1"
    );
    // The password: from the server's environment, set from the same variable as Grafana's.
    let from_env = format!("<password from_env=\"{password_var}\"");
    assert!(
        entry.contains(&from_env),
        "user {user}'s password is not read from {password_var}: {entry}"
    );
    let (in_ch, in_grafana) = (ch_env.get(&password_var), grafana_env.get(&password_var));
    assert!(
        in_ch.is_some() && in_ch == in_grafana,
        "{password_var} differs between clickhouse ({in_ch:?}) and grafana ({in_grafana:?})"
    );
    assert!(
        in_ch.is_some_and(|v| v.contains(":?")),
        "{password_var} is a secret without a default: {in_ch:?}"
    );
}
