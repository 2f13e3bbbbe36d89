//! `--config FILE`: a TOML file of settings for one command, keyed by the
//! flags' long names (`brokers = "kafka:9092"`, `pacing-patience = "1s"`,
//! `topic = ["ticks", "quotes"]`, `page = true`). Each value becomes the
//! flag's default before the command line is parsed, so the precedence is
//! flags, then `TICKFAN_*` variables, then the file, then the built-in
//! defaults. A file that does not parse, names a setting the command does
//! not have, or gives a value the flag would refuse is refused at start with
//! its path, line and reason. It never reads a setting clap does not know:
//! the file can set exactly what a flag can.

use std::{ffi::OsString, path::PathBuf};

use clap::Command;
use toml_edit::{Document, Item, Value};

/// The environment variable naming the file when `--config` is not given.
pub const CONFIG_ENV: &str = "TICKFAN_CONFIG";

/// The file `args` (or `TICKFAN_CONFIG`) name, applied to `cmd` as the
/// defaults of the subcommand `args` run; `cmd` unchanged without a file.
pub fn apply_from_args(cmd: Command, args: &[OsString]) -> anyhow::Result<Command> {
    let Some(path) = config_path(args) else {
        return Ok(cmd);
    };
    let Some(sub) = subcommand(&cmd, args) else {
        return Ok(cmd);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| anyhow::anyhow!("--config {}: {e}", path.display()))?;
    apply(cmd, &sub, &path.display().to_string(), &text)
}

/// `--config PATH`, `--config=PATH`, or else `TICKFAN_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let a = a.to_string_lossy();
        if a == "--" {
            break;
        }
        if a == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(p) = a.strip_prefix("--config=") {
            return Some(PathBuf::from(p));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The subcommand the command line runs: the first argument naming one.
fn subcommand(cmd: &Command, args: &[OsString]) -> Option<String> {
    args.iter().skip(1).find_map(|a| {
        let a = a.to_str()?;
        cmd.find_subcommand(a).map(|s| s.get_name().to_string())
    })
}

/// Applies the TOML `text` (from `origin`, for messages) as the defaults of
/// subcommand `sub` of `cmd`.
pub fn apply(cmd: Command, sub: &str, origin: &str, text: &str) -> anyhow::Result<Command> {
    let doc = Document::parse(text.to_string()).map_err(|e| {
        let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(1);
        anyhow::anyhow!("{origin}:{line}: {}", e.message())
    })?;
    let subcmd = cmd
        .find_subcommand(sub)
        .ok_or_else(|| anyhow::anyhow!("no command {sub}"))?
        .clone();
    let mut settings: Vec<(clap::Id, Vec<String>)> = Vec::new();
    for (key, item) in doc.as_table().iter() {
        let line = doc
            .as_table()
            .get_key_value(key)
            .and_then(|(k, _)| k.span())
            .map(|s| line_of(text, s.start))
            .unwrap_or(1);
        let at = |why: String| anyhow::anyhow!("{origin}:{line}: {why}");
        let values = if key == "mapping" {
            mapping_values(item)
        } else {
            values(item)
        }
        .map_err(&at)?;
        let arg = subcmd
            .get_arguments()
            .chain(cmd.get_arguments())
            .find(|a| a.get_long() == Some(key) && key != "config" && key != "help")
            .ok_or_else(|| {
                at(format!(
                    "`{key}` is not a setting of `tickfan {sub}` (settings are its flags' long names, as in `tickfan {sub} --help`)"
                ))
            })?;
        if values.len() > 1
            && arg.get_num_args().is_none_or(|n| n.max_values() <= 1)
            && !matches!(arg.get_action(), clap::ArgAction::Append)
        {
            return Err(at(format!("`{key}` takes one value, not a list")));
        }
        // The value as the flag would parse it, so a bad one is refused
        // here, with its line, rather than by clap without it.
        for v in &values {
            check_value(arg, v).map_err(|why| at(format!("`{key}`: {why}")))?;
        }
        settings.push((arg.get_id().clone(), values));
    }
    let globals: Vec<clap::Id> = cmd.get_arguments().map(|a| a.get_id().clone()).collect();
    let mut cmd = cmd;
    for (id, values) in settings {
        if globals.contains(&id) {
            cmd = cmd.mut_arg(id, |a| a.default_values(values));
        } else {
            cmd = cmd.mut_subcommand(sub, |s| s.mut_arg(id, |a| a.default_values(values)));
        }
    }
    Ok(cmd)
}

/// Parses `value` as `--<long> value` would be, alone: the flag's own
/// value parser decides (clap keeps that parser private otherwise).
fn check_value(arg: &clap::Arg, value: &str) -> Result<(), String> {
    if matches!(
        arg.get_action(),
        clap::ArgAction::SetTrue | clap::ArgAction::SetFalse
    ) {
        return match value {
            "true" | "false" => Ok(()),
            _ => Err(format!("expected true or false, got {value:?}")),
        };
    }
    let long = arg.get_long().unwrap_or_default();
    let alone = Command::new("tickfan")
        .arg(arg.clone().required(false).global(false))
        .try_get_matches_from(["tickfan".to_string(), format!("--{long}={value}")]);
    alone
        .map(|_| ())
        .map_err(|e| first_line(&e.to_string()).to_string())
}

/// A setting's value(s), as the strings a flag would get.
fn values(item: &Item) -> Result<Vec<String>, String> {
    let one = |v: &Value| -> Result<String, String> {
        Ok(match v {
            Value::String(s) => s.value().clone(),
            Value::Integer(i) => i.value().to_string(),
            Value::Float(f) => f.value().to_string(),
            Value::Boolean(b) => b.value().to_string(),
            Value::Datetime(_) | Value::Array(_) | Value::InlineTable(_) => {
                return Err("expected a string, number or boolean".into())
            }
        })
    };
    match item {
        Item::Value(Value::Array(a)) => a.iter().map(one).collect(),
        Item::Value(v) => Ok(vec![one(v)?]),
        Item::Table(_) | Item::ArrayOfTables(_) => Err(
            "sections are not settings: the file holds `flag-name = value` lines for one command"
                .into(),
        ),
        Item::None => Err("no value".into()),
    }
}

/// `[mapping.TOPIC]` tables (or `mapping = ["TOPIC:k=v,..."]`): each table
/// becomes the `--mapping` value `TOPIC:key=value,...`, a list (`forward`)
/// joined by `|`.
fn mapping_values(item: &Item) -> Result<Vec<String>, String> {
    let Item::Table(topics) = item else {
        return values(item);
    };
    let mut out = Vec::new();
    for (topic, t) in topics.iter() {
        let table = match t {
            Item::Table(t) => t.clone(),
            Item::Value(Value::InlineTable(t)) => t.clone().into_table(),
            _ => return Err(format!("[mapping.{topic}] must be a table of key = value")),
        };
        let mut parts = Vec::new();
        for (k, v) in table.iter() {
            let vals = values(v).map_err(|e| format!("mapping.{topic}.{k}: {e}"))?;
            parts.push(format!("{k}={}", vals.join("|")));
        }
        out.push(format!("{topic}:{}", parts.join(",")));
    }
    Ok(out)
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s).trim_start_matches("error: ")
}

#[cfg(test)]
mod tests {
    use clap::{Arg, ArgAction, Command};

    use super::*;

    /// A command shaped like tickfan's: a global flag, a subcommand with a
    /// duration, a list, a switch and a variable.
    fn cmd() -> Command {
        Command::new("tickfan")
            .arg(
                Arg::new("log_format")
                    .long("log-format")
                    .global(true)
                    .default_value("text"),
            )
            .subcommand(
                Command::new("edge")
                    .arg(
                        Arg::new("patience")
                            .long("pacing-patience")
                            .default_value("1s")
                            .value_parser(humantime::parse_duration),
                    )
                    .arg(
                        Arg::new("topic")
                            .long("topic")
                            .value_delimiter(',')
                            .action(ArgAction::Append)
                            .default_value("ticks"),
                    )
                    .arg(Arg::new("page").long("page").action(ArgAction::SetTrue))
                    .arg(
                        Arg::new("linger")
                            .long("release-linger")
                            .env("TICKFAN_TEST_CONFIG_FILE_LINGER")
                            .default_value("30s"),
                    ),
            )
    }

    fn parse(file: &str, argv: &[&str]) -> clap::ArgMatches {
        let c = apply(cmd(), "edge", "t.toml", file).unwrap();
        let m = c.try_get_matches_from(argv).unwrap();
        m.subcommand_matches("edge").unwrap().clone()
    }

    #[test]
    fn the_file_sets_defaults_and_flags_and_variables_win() {
        let file = "pacing-patience = \"3s\"\ntopic = [\"a\", \"b\"]\npage = true\nrelease-linger = \"5s\"\n";
        let m = parse(file, &["tickfan", "edge"]);
        assert_eq!(
            m.get_one::<std::time::Duration>("patience"),
            Some(&std::time::Duration::from_secs(3))
        );
        let topics: Vec<&String> = m.get_many("topic").unwrap().collect();
        assert_eq!(topics, ["a", "b"]);
        assert!(m.get_flag("page"));
        assert_eq!(
            m.get_one::<String>("linger").unwrap(),
            "5s",
            "file over default"
        );
        // A flag wins over the file.
        let m = parse(file, &["tickfan", "edge", "--pacing-patience", "2s"]);
        assert_eq!(
            m.get_one::<std::time::Duration>("patience"),
            Some(&std::time::Duration::from_secs(2))
        );
        // A variable wins over the file (a variable only this test reads).
        std::env::set_var("TICKFAN_TEST_CONFIG_FILE_LINGER", "7s");
        let m = parse(file, &["tickfan", "edge"]);
        std::env::remove_var("TICKFAN_TEST_CONFIG_FILE_LINGER");
        assert_eq!(
            m.get_one::<String>("linger").unwrap(),
            "7s",
            "variable over file"
        );
        // A global flag is a setting too.
        let c = apply(cmd(), "edge", "t.toml", "log-format = \"json\"\n").unwrap();
        let m = c.try_get_matches_from(["tickfan", "edge"]).unwrap();
        assert_eq!(m.get_one::<String>("log_format").unwrap(), "json");
    }

    #[test]
    fn a_bad_file_is_refused_with_its_path_line_and_reason() {
        let err = |file: &str| {
            format!(
                "{:#}",
                apply(cmd(), "edge", "conf/t.toml", file).unwrap_err()
            )
        };
        let e = err("page = true\npacing-patience = \"soon\"\n");
        assert!(e.starts_with("conf/t.toml:2: `pacing-patience`"), "{e}");
        let e = err("page = true\n\nbrokerz = \"x\"\n");
        assert!(
            e.starts_with("conf/t.toml:3: `brokerz` is not a setting of `tickfan edge`"),
            "{e}"
        );
        let e = err("page = \n");
        assert!(e.starts_with("conf/t.toml:1:"), "{e}");
        let e = err("[edge]\npage = true\n");
        assert!(e.contains("sections are not settings"), "{e}");
        let e = err("pacing-patience = [\"1s\", \"2s\"]\n");
        assert!(e.contains("takes one value"), "{e}");
        let e = err("config = \"other.toml\"\n");
        assert!(e.contains("not a setting"), "{e}");
    }

    #[test]
    fn the_file_is_found_by_flag_or_variable() {
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&args(&["tickfan", "edge", "--config", "a.toml"])),
            Some(PathBuf::from("a.toml"))
        );
        assert_eq!(
            config_path(&args(&["tickfan", "--config=b.toml", "edge"])),
            Some(PathBuf::from("b.toml"))
        );
        assert_eq!(
            subcommand(&cmd(), &args(&["tickfan", "--config=b.toml", "edge"])).as_deref(),
            Some("edge")
        );
    }
}
