//! Applying a profile to the operator's config file.
//!
//! Precedence, highest first: the profile named by `--profile`, else the one named by
//! `[tuning] profile` in the file; then the file's own values; then the gateway's
//! defaults. So a profile overrides the file, and every value of the file it replaces is
//! reported ([`Applied::log`] writes one line per key), so nothing changes silently. The
//! merge runs on the TOML table before [`Config`] is deserialized: the result is parsed
//! and validated exactly like a hand-written file.

use std::path::Path;

use anyhow::{bail, Context};
use sluice_proxy::Config;
use toml::{Table, Value};

use crate::merge::{merge, show, Change};
use crate::profiles::{find, Profile};

/// Where the profile in effect was named.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProfileChoice {
    /// `--profile NAME` (or `$SLUICE_PROFILE`).
    Flag,
    /// `[tuning] profile = "NAME"` in the config file.
    File,
}

/// A config with its profile (if any) applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The gateway's config, validated.
    pub config: Config,
    /// The profile in effect and where it was named; `None`: the file as written.
    pub profile: Option<(&'static Profile, ProfileChoice)>,
    /// The file's `[tuning] profile`, when `--profile` overrode a different one.
    pub overridden_file_profile: Option<String>,
    /// Every value the profile set, with the file's value where it had one.
    pub changes: Vec<Change>,
}

impl Applied {
    /// The file's values the profile replaced with different ones.
    pub fn replaced(&self) -> impl Iterator<Item = &Change> {
        self.changes.iter().filter(|c| c.replaced())
    }

    /// Logs which profile is in effect and one line per value of the file it replaced.
    pub fn log(&self) {
        let Some((profile, choice)) = self.profile else {
            return;
        };
        let from = match choice {
            ProfileChoice::Flag => "--profile",
            ProfileChoice::File => "[tuning] profile in the config file",
        };
        tracing::info!(
            profile = profile.name,
            from,
            settings = self.changes.len(),
            replaced_from_file = self.replaced().count(),
            "tuning profile applied"
        );
        if let Some(file_profile) = &self.overridden_file_profile {
            tracing::info!(
                file_profile = %file_profile,
                profile = profile.name,
                "--profile wins over the config file's [tuning] profile"
            );
        }
        for change in self.replaced() {
            tracing::info!(
                key = %change.key,
                file = %change.old.as_ref().map(show).unwrap_or_default(),
                profile_value = %show(&change.new),
                profile = profile.name,
                "tuning profile replaced a value from the config file"
            );
        }
    }
}

/// Reads `path`, applies the profile (`flag` first, else the file's `[tuning] profile`),
/// parses and validates the result.
pub fn load(path: &Path, flag: Option<&str>) -> anyhow::Result<Applied> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let base_dir = path.parent().unwrap_or_else(|| Path::new("."));
    apply(&text, base_dir, flag).with_context(|| format!("in {}", path.display()))
}

/// [`load`] on text already read; relative paths resolve against `base_dir`.
pub fn apply(text: &str, base_dir: &Path, flag: Option<&str>) -> anyhow::Result<Applied> {
    let mut table: Table = toml::from_str(text)?;
    let file_profile = file_profile(&table)?;
    let (name, choice) = match (flag, &file_profile) {
        (Some(name), _) => (name.to_owned(), ProfileChoice::Flag),
        (None, Some(name)) => (name.clone(), ProfileChoice::File),
        (None, None) => {
            // No profile: the file as written, through the gateway's own parser (whose
            // errors point at lines of the file).
            let mut config = Config::parse(text)?;
            config.base_dir = base_dir.to_path_buf();
            config.validate()?;
            return Ok(Applied {
                config,
                profile: None,
                overridden_file_profile: None,
                changes: Vec::new(),
            });
        }
    };
    let profile = find(&name)?;
    let changes = merge(&mut table, &profile.table()?);
    // The config records the profile in effect, whichever way it was named.
    let tuning = table
        .entry("tuning")
        .or_insert_with(|| Value::Table(Table::new()));
    if let Value::Table(tuning) = tuning {
        tuning.insert("profile".into(), Value::String(name.clone()));
    }
    let mut config: Config = Value::Table(table)
        .try_into()
        .with_context(|| format!("with tuning profile {name} applied"))?;
    config.base_dir = base_dir.to_path_buf();
    config
        .validate()
        .with_context(|| format!("with tuning profile {name} applied"))?;
    let overridden_file_profile =
        file_profile.filter(|f| choice == ProfileChoice::Flag && *f != name);
    Ok(Applied {
        config,
        profile: Some((profile, choice)),
        overridden_file_profile,
        changes,
    })
}

/// The gateway's defaults with `profile` applied, for when there is no config file (e.g.
/// `sluice tune check` before one is written). Not validated: it names no resources.
pub fn without_file(profile: Option<&str>) -> anyhow::Result<Config> {
    let mut table = Table::new();
    if let Some(name) = profile {
        merge(&mut table, &find(name)?.table()?);
    }
    Ok(Value::Table(table).try_into()?)
}

/// `[tuning] profile` of a parsed file, if set.
fn file_profile(table: &Table) -> anyhow::Result<Option<String>> {
    let Some(tuning) = table.get("tuning") else {
        return Ok(None);
    };
    let Value::Table(tuning) = tuning else {
        bail!("[tuning] must be a table, e.g. [tuning]\\nprofile = \"balanced\"");
    };
    match tuning.get("profile") {
        None => Ok(None),
        Some(Value::String(name)) => Ok(Some(name.clone())),
        Some(other) => bail!(
            "tuning.profile must be a profile name in quotes, not {}",
            show(other)
        ),
    }
}

/// The gateway's default for every key a profile may set: balanced's values (balanced
/// restates the defaults, which a test checks) plus `recording.enabled`, which balanced
/// leaves alone.
pub fn defaults() -> anyhow::Result<Table> {
    let mut table = find("balanced")?.table()?;
    if let Some(Value::Table(recording)) = table.get_mut("recording") {
        recording.insert("enabled".into(), Value::Boolean(true));
    }
    Ok(table)
}

/// Where an effective value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The gateway's default (the file does not set it).
    Default,
    /// The config file.
    File,
    /// The named profile.
    Profile(&'static str),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File => f.write_str("file"),
            Origin::Profile(name) => write!(f, "profile {name}"),
        }
    }
}

/// The value of every tunable key, and where it comes from, for `text` with `profile`
/// (`None`: the file's own `[tuning] profile`, if any).
pub fn effective_tunables(
    text: &str,
    profile: Option<&str>,
) -> anyhow::Result<Vec<(&'static str, Value, Origin)>> {
    let file: Table = toml::from_str(text)?;
    let profile = match profile {
        Some(name) => Some(find(name)?),
        None => file_profile(&file)?.map(|name| find(&name)).transpose()?,
    };
    let overlay = profile.map(Profile::table).transpose()?;
    let defaults = defaults()?;
    let mut values = Vec::new();
    for key in crate::profiles::TUNABLE_KEYS {
        let from_profile = overlay.as_ref().and_then(|t| lookup(t, key));
        let (value, origin) = match (from_profile, lookup(&file, key), lookup(&defaults, key)) {
            (Some(v), _, _) => (v, Origin::Profile(profile.map_or("", |p| p.name))),
            (None, Some(v), _) => (v, Origin::File),
            (None, None, Some(v)) => (v, Origin::Default),
            (None, None, None) => bail!("no default known for {key}"),
        };
        values.push((*key, value.clone(), origin));
    }
    Ok(values)
}

/// The value at a dotted `key` of `table`.
pub fn lookup<'t>(table: &'t Table, key: &str) -> Option<&'t Value> {
    let mut parts = key.split('.');
    let mut value = table.get(parts.next()?)?;
    for part in parts {
        value = value.as_table()?.get(part)?;
    }
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merge::leaf_keys;
    use crate::profiles::{PROFILES, TUNABLE_KEYS};

    const MINIMAL: &str = r#"
        [resources.shop]
        host = "127.0.0.1"
        database = "shop"
        user = "app"
        password_env = "SHOP_PASSWORD"
    "#;

    fn dir() -> tempfile::TempDir {
        tempfile::tempdir().expect("tempdir")
    }

    /// The sections a profile may touch, as text, for comparing two configs.
    fn tunables(config: &Config) -> String {
        format!(
            "{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
            config.listen, config.io, config.limits, config.recording, config.shutdown
        )
    }

    #[test]
    fn every_shipped_profile_loads_into_the_gateway_config_and_validates() {
        let dir = dir();
        for profile in PROFILES {
            let applied = apply(MINIMAL, dir.path(), Some(profile.name))
                .unwrap_or_else(|e| panic!("profile {}: {e:#}", profile.name));
            assert_eq!(applied.config.tuning.profile.as_deref(), Some(profile.name));
            assert!(!applied.changes.is_empty());
        }
    }

    #[test]
    fn every_shipped_profile_applies_to_the_demo_config() {
        let dir = dir();
        let deployment = sluice_proxy::deployment::write(
            dir.path(),
            6432,
            sluice_proxy::config::Driver::IoUring,
            &sluice_proxy::deployment::BackendSpec {
                resource: "shop".into(),
                host: "127.0.0.1".into(),
                port: 5432,
                database: "shop".into(),
                user: "gw".into(),
                password: "pw".into(),
            },
        )
        .expect("write the demo deployment");
        for profile in PROFILES {
            let applied = load(&deployment.config, Some(profile.name))
                .unwrap_or_else(|e| panic!("profile {}: {e:#}", profile.name));
            // What a profile must never touch came through from the file.
            assert_eq!(applied.config.listen.address.port(), 6432);
            assert!(applied.config.tls.is_some());
            assert_eq!(applied.config.policy.rules.len(), 4);
            let own = profile.table().expect("parses");
            let grace = lookup(&own, "shutdown.grace_secs").and_then(Value::as_integer);
            assert_eq!(
                applied.config.shutdown.grace_secs,
                grace.map_or(5, |v| v as u64),
                "the demo file's 5 s unless the profile sets it"
            );
        }
    }

    #[test]
    fn balanced_restates_the_gateway_defaults() {
        let dir = dir();
        let mut plain = Config::parse(MINIMAL).expect("parses");
        plain.base_dir = dir.path().to_path_buf();
        let balanced = apply(MINIMAL, dir.path(), Some("balanced")).expect("applies");
        assert_eq!(tunables(&balanced.config), tunables(&plain));
        assert_eq!(
            balanced.replaced().count(),
            0,
            "a minimal file sets nothing"
        );

        // And `defaults()` names every tunable key, at the gateway's default.
        let defaults = defaults().expect("defaults");
        let mut keys = Vec::new();
        leaf_keys(&defaults, "", &mut keys);
        keys.sort();
        let mut tunable: Vec<String> = TUNABLE_KEYS.iter().map(|k| k.to_string()).collect();
        tunable.sort();
        assert_eq!(keys, tunable);
        let mut table: Table = toml::from_str(MINIMAL).expect("parses");
        merge(&mut table, &defaults);
        let mut with_defaults: Config = Value::Table(table).try_into().expect("deserializes");
        with_defaults.base_dir = dir.path().to_path_buf();
        assert_eq!(tunables(&with_defaults), tunables(&plain));
    }

    #[test]
    fn the_profile_overrides_the_file_and_reports_what_it_replaced() {
        let text = format!(
            "{MINIMAL}\n[recording]\nfsync = \"off\"\nzstd_level = 3\n[listen]\nworkers = 3\n"
        );
        let applied = apply(&text, dir().path(), Some("audit-heavy")).expect("applies");
        let r = &applied.config.recording;
        assert_eq!(r.fsync, sluice_proxy::config::RecordingFsync::EveryBlock);
        assert_eq!(
            r.overflow,
            sluice_proxy::config::RecordingOverflow::FailClosed
        );
        assert_eq!(
            applied.config.listen.workers, 3,
            "audit-heavy leaves workers alone"
        );
        let replaced: Vec<&str> = applied.replaced().map(|c| c.key.as_str()).collect();
        assert_eq!(replaced, ["recording.fsync"], "zstd_level was 3 already");
        assert_eq!(
            applied.profile.map(|(p, c)| (p.name, c)),
            Some(("audit-heavy", ProfileChoice::Flag))
        );
    }

    #[test]
    fn the_flag_wins_over_the_file_and_the_file_alone_works() {
        let text = format!("[tuning]\nprofile = \"small-host\"\n{MINIMAL}");
        let from_file = apply(&text, dir().path(), None).expect("applies");
        assert_eq!(from_file.config.listen.workers, 1);
        assert_eq!(
            from_file.profile.map(|(p, c)| (p.name, c)),
            Some(("small-host", ProfileChoice::File))
        );
        assert_eq!(from_file.overridden_file_profile, None);

        let flagged = apply(&text, dir().path(), Some("high-throughput")).expect("applies");
        assert_eq!(flagged.config.listen.workers, 0);
        assert_eq!(flagged.config.limits.buffer_bytes, 262_144);
        assert_eq!(
            flagged.config.tuning.profile.as_deref(),
            Some("high-throughput")
        );
        assert_eq!(
            flagged.overridden_file_profile.as_deref(),
            Some("small-host")
        );
    }

    #[test]
    fn without_a_profile_the_file_is_taken_as_written() {
        let text = format!("{MINIMAL}\n[limits]\nbuffer_bytes = 8192\n");
        let applied = apply(&text, dir().path(), None).expect("applies");
        assert!(applied.profile.is_none() && applied.changes.is_empty());
        assert_eq!(applied.config.limits.buffer_bytes, 8192);
    }

    #[test]
    fn effective_values_name_their_origin() {
        let text = format!("[tuning]\nprofile = \"small-host\"\n{MINIMAL}\n[io]\nbacklog = 77\n[recording]\nfsync = \"off\"\n");
        let value = |values: &[(&str, Value, Origin)], key: &str| {
            values
                .iter()
                .find(|(k, _, _)| *k == key)
                .map(|(_, v, o)| (show(v), *o))
                .expect(key)
        };
        let current = effective_tunables(&text, None).expect("values");
        assert_eq!(current.len(), TUNABLE_KEYS.len());
        assert_eq!(
            value(&current, "listen.workers"),
            ("1".into(), Origin::Profile("small-host"))
        );
        assert_eq!(
            value(&current, "io.backlog"),
            ("256".into(), Origin::Profile("small-host"))
        );
        assert_eq!(
            value(&current, "recording.fsync"),
            ("\"off\"".into(), Origin::File)
        );
        assert_eq!(
            value(&current, "shutdown.grace_secs"),
            ("30".into(), Origin::Default)
        );
        let audit = effective_tunables(&text, Some("audit-heavy")).expect("values");
        assert_eq!(value(&audit, "io.backlog"), ("77".into(), Origin::File));
        assert_eq!(
            value(&audit, "recording.fsync"),
            ("\"every_block\"".into(), Origin::Profile("audit-heavy"))
        );
    }

    #[test]
    fn unknown_profiles_and_bad_tuning_sections_are_refused_clearly() {
        let err = apply(MINIMAL, dir().path(), Some("turbo")).expect_err("unknown");
        let text = format!("{err:#}");
        assert!(
            text.contains("\"turbo\"") && text.contains("low-latency"),
            "{text}"
        );

        let in_file = format!("[tuning]\nprofile = \"turbo\"\n{MINIMAL}");
        let err = apply(&in_file, dir().path(), None).expect_err("unknown in file");
        assert!(format!("{err:#}").contains("small-host"), "{err:#}");

        let number = format!("[tuning]\nprofile = 3\n{MINIMAL}");
        let err = apply(&number, dir().path(), None).expect_err("not a string");
        assert!(format!("{err:#}").contains("tuning.profile"), "{err:#}");

        let typo = format!("[tuning]\nprofil = \"balanced\"\n{MINIMAL}");
        let err = apply(&typo, dir().path(), None).expect_err("typo in [tuning]");
        assert!(format!("{err:#}").contains("profil"), "{err:#}");
    }

    #[test]
    fn a_profile_result_the_gateway_refuses_is_refused_with_the_profile_named() {
        // SQPOLL needs io_uring: a file that asks for epoll, under a profile that does not
        // touch the driver, is still checked after the merge.
        let text = format!("{MINIMAL}\n[listen]\ndriver = \"epoll\"\n[io]\nuring_sqpoll = true\n");
        let err = apply(&text, dir().path(), Some("audit-heavy")).expect_err("invalid");
        let text = format!("{err:#}");
        assert!(
            text.contains("audit-heavy") && text.contains("io.uring_sqpoll"),
            "{text}"
        );
    }
}
