//! Settings from four layers, later ones winning: the defaults, a TOML file (`--config FILE`),
//! `DATACAKE_*` environment variables, command-line flags.
//!
//! One rule names a setting everywhere, after its key in the file:
//!
//! | where | rule | examples |
//! |---|---|---|
//! | file | the key; a key of a table is under its `[table]` | `node_id`; `election_timeout_min_ms` under `[timings]` |
//! | flag | `--` and the key (without its table), `_` written `-` | `--node-id`, `--election-timeout-min-ms` |
//! | environment | `DATACAKE_` and the key's whole path upper-cased, parts joined by `_` | `DATACAKE_NODE_ID`, `DATACAKE_TIMINGS_ELECTION_TIMEOUT_MIN_MS` |
//!
//! A list (e.g. `seeds`) is comma-separated in its environment variable, and its flag may be
//! repeated. `--config` itself is `DATACAKE_CONFIG` in the environment.
//!
//! A server describes its settings once, as a [`Settings`] type (serde, `deny_unknown_fields`,
//! `#[serde(default)]` from its `Default`), and its flags once, as a clap parser whose
//! arguments are named after the keys and are all optional. [`parse`] gives each argument its
//! environment variable by the rule; [`load`] reads the file, lays the flags and environment
//! over it, and checks the result; [`unmatched`] lists what breaks the rule (for a unit test).

use std::path::{Path, PathBuf};

use clap::{Args, Command, CommandFactory, FromArgMatches};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

/// The prefix of every environment variable that sets a setting.
pub const ENV_PREFIX: &str = "DATACAKE_";

/// The environment variable of `--config`.
pub const CONFIG_ENV: &str = "DATACAKE_CONFIG";

/// The exit status of an invalid configuration (as clap's for a bad flag).
pub const EXIT_CONFIG: u8 = 2;

/// Flags and environment variables that are not settings of their own.
const NOT_SETTINGS: [&str; 4] = ["config", "print_config", "help", "version"];

/// A server's settings: every key with its default (from `Default`), readable from a TOML
/// file (unknown keys refused), printable as JSON.
pub trait Settings: Serialize + DeserializeOwned + Default {
    /// Fills in settings that default to others, and checks every value; an error names the
    /// key.
    fn finish(&mut self) -> Result<(), ConfigError>;
}

/// `--config` and `--print-config`, for a server's parser to flatten in.
#[derive(Debug, Default, Args)]
pub struct ConfigArgs {
    /// A TOML file with the settings below (snake_case keys, e.g. `node_id`); environment
    /// variables and flags override it.
    #[arg(long, value_name = "FILE", env = CONFIG_ENV)]
    pub config: Option<PathBuf>,
    /// Print the settings in force (defaults < file < environment < flags) as JSON and exit:
    /// 0 if they are valid, 2 if not.
    #[arg(long, alias = "check-config")]
    pub print_config: bool,
}

/// Why the settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read the config file {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML, or has an unknown key or a value of the wrong type.
    #[error("invalid config file {}: {message}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong and where (the key, its line).
        message: String,
    },
    /// A required setting is set nowhere.
    #[error(
        "{key} is required: set --{}, {} or `{key}` in the config file",
        flag_name(key),
        env_name(key)
    )]
    Missing {
        /// The key (a dotted path for a key of a table).
        key: &'static str,
    },
    /// A setting is required by another that is set.
    #[error(
        "{key} is required with {by}: set --{}, {} or `{key}` in the config file",
        flag_name(key),
        env_name(key)
    )]
    RequiredBy {
        /// The key that is missing.
        key: &'static str,
        /// The key that is set and needs it.
        by: &'static str,
    },
    /// A setting has a value that cannot work.
    #[error("invalid {key}: {reason}")]
    Invalid {
        /// The key (a dotted path for a key of a table).
        key: &'static str,
        /// Why it cannot work.
        reason: String,
    },
}

impl ConfigError {
    /// An [`Invalid`](Self::Invalid) error.
    pub fn invalid(key: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            key,
            reason: reason.into(),
        }
    }
}

/// The environment variable of the key at `path` (dotted for a key of a table).
///
/// ```
/// use server_common::config::env_name;
///
/// assert_eq!(env_name("node_id"), "DATACAKE_NODE_ID");
/// assert_eq!(
///     env_name("timings.election_timeout_min_ms"),
///     "DATACAKE_TIMINGS_ELECTION_TIMEOUT_MIN_MS"
/// );
/// ```
pub fn env_name(path: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        path.replace('.', "_").to_ascii_uppercase()
    )
}

/// The flag of the key at `path`, without its `--`.
fn flag_name(path: &str) -> String {
    leaf(path).replace('_', "-")
}

/// The last part of a dotted path.
fn leaf(path: &str) -> &str {
    path.rsplit('.').next().unwrap_or(path)
}

/// Every key of `S` as a dotted path (a key of a table after the table's name), sorted.
pub fn keys<S: Settings>() -> Vec<String> {
    fn walk(prefix: &str, object: &Map<String, Value>, out: &mut Vec<String>) {
        for (key, value) in object {
            let path = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            match value {
                Value::Object(table) => walk(&path, table, out),
                _ => out.push(path),
            }
        }
    }
    let mut out = Vec::new();
    if let Value::Object(root) = to_json(&S::default()) {
        walk("", &root, &mut out);
    }
    out
}

fn to_json(value: &impl Serialize) -> Value {
    serde_json::to_value(value).expect("settings serialise to JSON")
}

/// `command` with each argument named after a key of `S` reading that key's environment
/// variable; the same for its `serve` subcommand, if it has one.
pub fn with_env<S: Settings>(command: Command) -> Command {
    let keys = keys::<S>();
    let apply = |mut command: Command| {
        for path in &keys {
            let id = leaf(path).to_owned();
            if command
                .get_arguments()
                .any(|arg| arg.get_id() == id.as_str())
            {
                command = command.mut_arg(id, |arg| arg.env(env_name(path)));
            }
        }
        command
    };
    let mut command = apply(command);
    if command.find_subcommand("serve").is_some() {
        command = command.mut_subcommand("serve", apply);
    }
    command
}

/// Parses the process's arguments and environment into `P` (exiting as clap does on an
/// error, `--help` or `--version`), with environment variables by the rule.
pub fn parse<P: CommandFactory + FromArgMatches, S: Settings>() -> P {
    let mut matches = with_env::<S>(P::command()).get_matches();
    P::from_arg_matches_mut(&mut matches).unwrap_or_else(|error| error.exit())
}

/// What in `P`'s arguments and `S`'s keys breaks the rule: an argument that is no key (other
/// than `--config`, `--print-config`, `--help`, `--version`), a key without an argument, two
/// keys of the same name in different tables. Empty when the rule holds.
pub fn unmatched<P: CommandFactory, S: Settings>() -> Vec<String> {
    let keys = keys::<S>();
    let mut command = P::command();
    if let Some(serve) = command.find_subcommand("serve") {
        command = serve.clone();
    }
    let args: Vec<String> = command
        .get_arguments()
        .map(|arg| arg.get_id().to_string())
        .collect();
    let mut problems = Vec::new();
    for arg in &args {
        if !NOT_SETTINGS.contains(&arg.as_str()) && !keys.iter().any(|k| leaf(k) == arg) {
            problems.push(format!(
                "--{} is no key of the settings",
                arg.replace('_', "-")
            ));
        }
    }
    for (i, key) in keys.iter().enumerate() {
        if !args.iter().any(|arg| arg == leaf(key)) {
            problems.push(format!("`{key}` has no flag"));
        }
        if keys[..i].iter().any(|other| leaf(other) == leaf(key)) {
            problems.push(format!("`{key}` shares its name with another key"));
        }
    }
    problems
}

/// The settings: the defaults, then the file at `file` (if any), then `overrides` (the
/// parsed flags and environment: each field named after a key, `None` or an empty list where
/// not given), finished and checked.
pub fn load<S: Settings>(
    file: Option<&Path>,
    overrides: &impl Serialize,
) -> Result<S, ConfigError> {
    let base = match file {
        Some(path) => read_file::<S>(path)?,
        None => S::default(),
    };
    merge(base, overrides)
}

/// `base` (the defaults, or a file's settings) with `overrides` laid over it as in [`load`],
/// finished and checked.
pub fn merge<S: Settings>(base: S, overrides: &impl Serialize) -> Result<S, ConfigError> {
    let mut settings = overlay(base, overrides)?;
    settings.finish()?;
    Ok(settings)
}

/// Reads the TOML file at `path`.
pub fn read_file<S: Settings>(path: &Path) -> Result<S, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_toml(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses a TOML file's text (the error names the key and its line).
pub fn parse_toml<S: Settings>(text: &str) -> Result<S, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

/// `base` with every given value of `overrides` in place of the key of the same name.
fn overlay<S: Settings>(base: S, overrides: &impl Serialize) -> Result<S, ConfigError> {
    let keys = keys::<S>();
    let mut merged = to_json(&base);
    let Value::Object(given) = to_json(overrides) else {
        panic!("the overrides are a struct");
    };
    for (name, value) in given {
        let absent = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if absent {
            continue;
        }
        let path = keys
            .iter()
            .find(|k| leaf(k) == name)
            .unwrap_or_else(|| panic!("the flag --{name} is no key of the settings"));
        let mut slot = &mut merged;
        for part in path.split('.') {
            slot = &mut slot[part];
        }
        *slot = value;
    }
    serde_json::from_value(merged).map_err(|error| ConfigError::Invalid {
        key: "flags",
        reason: error.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Example {
        node_id: Option<u32>,
        name: String,
        seeds: Vec<String>,
        verbose: bool,
        timings: Timings,
    }

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    #[serde(default, deny_unknown_fields)]
    struct Timings {
        tick_ms: u64,
    }

    impl Default for Example {
        fn default() -> Self {
            Self {
                node_id: None,
                name: "default".into(),
                seeds: Vec::new(),
                verbose: false,
                timings: Timings::default(),
            }
        }
    }

    impl Default for Timings {
        fn default() -> Self {
            Self { tick_ms: 100 }
        }
    }

    impl Settings for Example {
        fn finish(&mut self) -> Result<(), ConfigError> {
            if self.node_id.is_none() {
                return Err(ConfigError::Missing { key: "node_id" });
            }
            if self.timings.tick_ms == 0 {
                return Err(ConfigError::invalid(
                    "timings.tick_ms",
                    "must be at least 1",
                ));
            }
            Ok(())
        }
    }

    #[derive(Debug, Parser, Serialize)]
    struct Flags {
        #[command(flatten)]
        #[serde(skip)]
        config: ConfigArgs,
        #[arg(long)]
        node_id: Option<u32>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long = "seed", value_delimiter = ',')]
        seeds: Vec<String>,
        #[arg(long, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
        verbose: Option<bool>,
        #[arg(long)]
        tick_ms: Option<u64>,
    }

    fn flags(args: &[&str]) -> Flags {
        let command = with_env::<Example>(Flags::command());
        let mut matches = command
            .try_get_matches_from(std::iter::once("example").chain(args.iter().copied()))
            .expect("valid flags");
        Flags::from_arg_matches_mut(&mut matches).unwrap()
    }

    #[test]
    fn keys_are_dotted_paths_and_name_environment_variables() {
        assert_eq!(
            keys::<Example>(),
            ["name", "node_id", "seeds", "timings.tick_ms", "verbose"]
        );
        assert_eq!(env_name("timings.tick_ms"), "DATACAKE_TIMINGS_TICK_MS");
        assert_eq!(flag_name("timings.tick_ms"), "tick-ms");
        let command = with_env::<Example>(Flags::command());
        let env = |id: &str| {
            let arg = command.get_arguments().find(|a| a.get_id() == id).unwrap();
            arg.get_env().map(|e| e.to_string_lossy().into_owned())
        };
        assert_eq!(env("tick_ms").as_deref(), Some("DATACAKE_TIMINGS_TICK_MS"));
        assert_eq!(env("seeds").as_deref(), Some("DATACAKE_SEEDS"));
        assert_eq!(env("config").as_deref(), Some(CONFIG_ENV));
        assert_eq!(env("print_config"), None);
        assert!(unmatched::<Flags, Example>().is_empty());
    }

    #[test]
    fn flags_override_the_file_which_overrides_the_defaults() {
        let file: Example =
            parse_toml("node_id = 1\nname = \"file\"\nseeds = [\"a:1\"]\n[timings]\ntick_ms = 5\n")
                .unwrap();
        let merged = overlay(file, &flags(&["--name", "flag", "--verbose"])).unwrap();
        assert_eq!(
            merged,
            Example {
                node_id: Some(1),
                name: "flag".into(),
                seeds: vec!["a:1".into()],
                verbose: true,
                timings: Timings { tick_ms: 5 },
            }
        );
        let merged = overlay(
            Example::default(),
            &flags(&["--seed", "b:2,c:3", "--tick-ms", "7", "--verbose=false"]),
        )
        .unwrap();
        assert_eq!(merged.seeds, ["b:2", "c:3"]);
        assert_eq!(merged.timings.tick_ms, 7);
        assert!(!merged.verbose);
        assert_eq!(merged.name, "default");
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        let error = parse_toml::<Example>("node_id = 1\nnmae = \"x\"\n").unwrap_err();
        assert!(error.contains("nmae"), "{error}");
        let error = parse_toml::<Example>("[timings]\ntick = 1\n").unwrap_err();
        assert!(error.contains("tick"), "{error}");
        let error = parse_toml::<Example>("node_id = \"one\"\n").unwrap_err();
        assert!(error.contains("node_id"), "{error}");
        let mut example = Example {
            node_id: Some(1),
            ..Example::default()
        };
        example.timings.tick_ms = 0;
        let error = example.finish().unwrap_err().to_string();
        assert_eq!(error, "invalid timings.tick_ms: must be at least 1");
        let error = Example::default().finish().unwrap_err().to_string();
        assert_eq!(
            error,
            "node_id is required: set --node-id, DATACAKE_NODE_ID or `node_id` in the config file"
        );
    }

    #[test]
    fn the_rule_is_checked() {
        #[derive(Debug, Parser, Serialize)]
        struct Wrong {
            #[arg(long)]
            node_id: Option<u32>,
            #[arg(long)]
            colour: Option<String>,
        }
        let problems = unmatched::<Wrong, Example>();
        assert!(problems.contains(&"--colour is no key of the settings".to_owned()));
        assert!(problems.contains(&"`timings.tick_ms` has no flag".to_owned()));
    }
}
