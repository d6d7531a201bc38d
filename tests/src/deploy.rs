//! Reading the deployment files (`docker-compose.yml`, `deploy/`) and the binaries' `--help`
//! for the compose-consistency tests (`tests/tests/compose.rs`, `tests/tests/grafana.rs`).
//! No Docker engine runs where the tests run, so these files are checked by reading them
//! against what the binaries declare.
//!
//! YAML is read with `yaml-rust2`, which resolves anchors and aliases but not YAML 1.1 merge
//! keys (`<<: *anchor`), which docker-compose files use: [`load_yaml`] applies them.
//! Compose's variable interpolation (`${VAR:-default}`, `${VAR:?message}`, `$$`) is done by
//! [`interpolate`], which also reports how each variable was referenced.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use yaml_rust2::yaml::Hash;
use yaml_rust2::{Yaml, YamlLoader};

/// The repository root (the parent of this crate's directory).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

/// Reads a file of the repository, failing with its path.
pub fn read_repo_file(relative: &str) -> Result<String, String> {
    let path = repo_root().join(relative);
    std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// Parses one YAML document and applies its merge keys.
pub fn parse_yaml(text: &str, what: &str) -> Result<Yaml, String> {
    let mut docs = YamlLoader::load_from_str(text).map_err(|e| format!("{what}: {e}"))?;
    if docs.len() != 1 {
        return Err(format!("{what}: {} YAML documents, expected 1", docs.len()));
    }
    apply_merge_keys(docs.remove(0)).map_err(|e| format!("{what}: {e}"))
}

/// Reads and parses a YAML file of the repository.
pub fn load_yaml(relative: &str) -> Result<Yaml, String> {
    parse_yaml(&read_repo_file(relative)?, relative)
}

/// Applies `<<` merge keys, innermost first: the mapping's own keys win, then the merged
/// mappings in the order listed (an earlier one wins over a later one), as compose does.
pub fn apply_merge_keys(node: Yaml) -> Result<Yaml, String> {
    match node {
        Yaml::Array(items) => Ok(Yaml::Array(
            items
                .into_iter()
                .map(apply_merge_keys)
                .collect::<Result<_, _>>()?,
        )),
        Yaml::Hash(hash) => {
            let merge_key = Yaml::String("<<".into());
            let mut own = Hash::new();
            let mut sources = Vec::new();
            for (k, v) in hash {
                let v = apply_merge_keys(v)?;
                if k == merge_key {
                    match v {
                        Yaml::Hash(h) => sources.push(h),
                        Yaml::Array(list) => {
                            for item in list {
                                match item {
                                    Yaml::Hash(h) => sources.push(h),
                                    other => {
                                        return Err(format!(
                                            "a merge key lists a non-mapping: {other:?}"
                                        ))
                                    }
                                }
                            }
                        }
                        other => return Err(format!("a merge key names a non-mapping: {other:?}")),
                    }
                } else {
                    own.insert(k, v);
                }
            }
            for source in sources {
                for (k, v) in source {
                    if !own.contains_key(&k) {
                        own.insert(k, v);
                    }
                }
            }
            Ok(Yaml::Hash(own))
        }
        other => Ok(other),
    }
}

/// A scalar as text (`8` and `"8"` alike); `None` for mappings, sequences and null.
pub fn scalar(node: &Yaml) -> Option<String> {
    match node {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// How a compose file refers to one variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VarRef {
    /// `${VAR:-default}` or `${VAR-default}`.
    Default(String),
    /// `${VAR:?message}` or `${VAR?message}`: compose refuses to start without it.
    Required,
    /// `${VAR}` or `$VAR`: empty, with only a warning, when unset.
    Bare,
}

/// A value after compose's interpolation, with the defaults in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interpolated {
    /// The value when no variable is set (a required variable reads `<VAR>`).
    pub value: String,
    /// Every variable referenced, and how.
    pub refs: Vec<(String, VarRef)>,
}

impl Interpolated {
    /// Whether the value is only known when the operator sets a required variable.
    pub fn is_required_input(&self) -> bool {
        self.refs.iter().any(|(_, r)| *r == VarRef::Required)
    }
}

/// Interpolates `text` as docker compose does, with no variable set.
pub fn interpolate(text: &str) -> Result<Interpolated, String> {
    let mut value = String::new();
    let mut refs = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find('$') {
        value.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            value.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let expr = &body[..end];
            let name_end = expr
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(expr.len());
            let (name, op) = expr.split_at(name_end);
            if name.is_empty() {
                return Err(format!("empty variable name in {text:?}"));
            }
            let reference = if let Some(d) = op.strip_prefix(":-").or_else(|| op.strip_prefix('-'))
            {
                value.push_str(d);
                VarRef::Default(d.to_string())
            } else if op.starts_with(":?") || op.starts_with('?') {
                value.push_str(&format!("<{name}>"));
                VarRef::Required
            } else if op.is_empty() {
                VarRef::Bare
            } else {
                return Err(format!("unsupported interpolation ${{{expr}}} in {text:?}"));
            };
            refs.push((name.to_string(), reference));
            rest = &body[end + 1..];
        } else {
            let name_end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if name_end == 0 {
                return Err(format!("a lone $ in {text:?} (write $$)"));
            }
            refs.push((after[..name_end].to_string(), VarRef::Bare));
            rest = &after[name_end..];
        }
    }
    value.push_str(rest);
    Ok(Interpolated { value, refs })
}

/// What a binary's `--help` declares.
#[derive(Debug, Clone, Default)]
pub struct Help {
    /// Long options (`--name`) and whether each takes a value.
    pub options: BTreeMap<String, bool>,
    /// Environment variables, with the option's help block (description, default).
    pub env: BTreeMap<String, OptionHelp>,
    /// Subcommands.
    pub subcommands: BTreeSet<String>,
    /// Long options the usage line requires.
    pub required: BTreeSet<String>,
}

/// One option's help block.
#[derive(Debug, Clone, Default)]
pub struct OptionHelp {
    /// The long option.
    pub long: String,
    /// `[default: …]`, if any.
    pub default: Option<String>,
    /// The whole block (description included).
    pub text: String,
}

/// Runs `binary [path…] --help` with an empty environment (clap prints the value of a set
/// variable beside its name) and parses its answer.
pub fn help_of(binary: &Path, path: &[String]) -> Result<Help, String> {
    let out = Command::new(binary)
        .args(path)
        .arg("--help")
        .env_clear()
        .output()
        .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} {} --help failed: {}",
            binary.display(),
            path.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(parse_help(&String::from_utf8_lossy(&out.stdout)))
}

/// The long option an option line of clap's help starts with, and whether it takes a value:
/// `  -b, --brokers <BROKERS>  …` gives `("brokers", true)`.
fn option_line(line: &str) -> Option<(String, bool)> {
    let t = line.trim_start();
    if line.len() == t.len() {
        return None;
    }
    let t = match t.strip_prefix('-') {
        Some(short) if !short.starts_with('-') => short.get(1..)?.strip_prefix(", ")?,
        _ => t,
    };
    let name_and_rest = t.strip_prefix("--")?;
    let end = name_and_rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_'))
        .unwrap_or(name_and_rest.len());
    let name = &name_and_rest[..end];
    if name.is_empty() {
        return None;
    }
    let after = &name_and_rest[end..];
    let takes_value =
        after.starts_with(" <") || after.starts_with("=<") || after.starts_with(" [<");
    Some((name.to_string(), takes_value))
}

/// Parses clap's `--help` text (long or short form).
pub fn parse_help(text: &str) -> Help {
    let mut help = Help::default();
    let mut section = String::new();
    let mut current: Option<OptionHelp> = None;
    let flush = |current: &mut Option<OptionHelp>, help: &mut Help| {
        if let Some(block) = current.take() {
            if let Some(var) = bracketed(&block.text, "[env: ") {
                let var = var.split('=').next().unwrap_or("").trim().to_string();
                let default = bracketed(&block.text, "[default: ");
                help.env.insert(var, OptionHelp { default, ..block });
            }
        }
    };
    for line in text.lines() {
        if let Some(usage) = line.strip_prefix("Usage: ") {
            // Options outside `[...]` are required.
            let mut depth = 0usize;
            let mut outside = String::new();
            for c in usage.chars() {
                match c {
                    '[' => depth += 1,
                    ']' => depth = depth.saturating_sub(1),
                    _ if depth == 0 => outside.push(c),
                    _ => {}
                }
            }
            for word in outside.split_whitespace() {
                if let Some(name) = word.strip_prefix("--") {
                    help.required.insert(name.to_string());
                }
            }
            continue;
        }
        if !line.starts_with(' ') && line.ends_with(':') {
            flush(&mut current, &mut help);
            section = line.trim_end_matches(':').to_string();
            continue;
        }
        match section.as_str() {
            "Commands" => {
                if let Some(name) = line.split_whitespace().next() {
                    if line.starts_with("  ") && !line.starts_with("   ") && name != "help" {
                        help.subcommands.insert(name.to_string());
                    }
                }
            }
            "Options" | "Arguments" => {
                if let Some((long, takes_value)) = option_line(line) {
                    flush(&mut current, &mut help);
                    help.options.insert(long.clone(), takes_value);
                    current = Some(OptionHelp {
                        long,
                        default: None,
                        text: line.to_string(),
                    });
                } else if let Some(block) = current.as_mut() {
                    block.text.push('\n');
                    block.text.push_str(line);
                }
            }
            _ => {}
        }
    }
    flush(&mut current, &mut help);
    help
}

/// The text inside `prefix…]` in `text`.
fn bracketed(text: &str, prefix: &str) -> Option<String> {
    let start = text.find(prefix)? + prefix.len();
    let end = text[start..].find(']')? + start;
    Some(text[start..end].to_string())
}

/// `host:port` → (host, port); `[::]:port` too.
pub fn split_host_port(addr: &str) -> Option<(String, u16)> {
    let (host, port) = addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_string(), port.parse().ok()?))
}

/// The host and port of an `http://host:port/…` URL.
pub fn url_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split('/').next()?;
    split_host_port(authority)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_keys_keep_own_keys_and_the_first_source() {
        let y = parse_yaml(
            "a: &a {x: 1, y: 1}\nb: &b {y: 2, z: 2}\nc:\n  <<: [*a, *b]\n  x: 3\n",
            "t",
        )
        .unwrap();
        let c = &y["c"];
        assert_eq!(c["x"].as_i64(), Some(3));
        assert_eq!(c["y"].as_i64(), Some(1));
        assert_eq!(c["z"].as_i64(), Some(2));
        assert!(c["<<"].is_badvalue());
    }

    #[test]
    fn interpolation_like_compose() {
        let i = interpolate("a ${X:-1} ${Y:?set Y} $$Z ${W}").unwrap();
        assert_eq!(i.value, "a 1 <Y> $Z ");
        assert_eq!(
            i.refs,
            vec![
                ("X".into(), VarRef::Default("1".into())),
                ("Y".into(), VarRef::Required),
                ("W".into(), VarRef::Bare),
            ]
        );
        assert!(interpolate("${X").is_err());
    }

    #[test]
    fn help_parsing() {
        let h = parse_help(
            "Does things\n\nUsage: x [OPTIONS] --need <NEED> [COMMAND]\n\nCommands:\n  list  Lists\n  help  Print this\n\nOptions:\n      --brokers <BROKERS>\n          Kafka bootstrap servers\n\n          [env: COSTPIPE_KAFKA_BROKERS=]\n          [default: 127.0.0.1:19092]\n\n      --flag  A flag [env: COSTPIPE_FLAG=]\n  -h, --help  Print help\n",
        );
        assert_eq!(h.options.get("brokers"), Some(&true));
        assert_eq!(h.options.get("flag"), Some(&false));
        assert_eq!(h.options.get("help"), Some(&false));
        assert_eq!(
            h.env["COSTPIPE_KAFKA_BROKERS"].default.as_deref(),
            Some("127.0.0.1:19092")
        );
        assert_eq!(h.env["COSTPIPE_FLAG"].long, "flag");
        assert!(h.subcommands.contains("list") && !h.subcommands.contains("help"));
        assert!(h.required.contains("need"));
    }
}
