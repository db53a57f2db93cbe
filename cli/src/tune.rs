//! `sluice tune`: the shipped tuning profiles and the read-only host check; and the
//! `--profile` option of the commands that start a gateway. Everything here is argument
//! handling and printing; the logic lives in `sluice-tuning`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use sluice_tuning::check::{self, HostFacts, Plan, Status};
use sluice_tuning::{Origin, PROFILES};

/// `--profile NAME` of `up`, `proxy` and `demo`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ProfileArg {
    /// Tuning profile merged over the config file's values (`sluice tune profiles`); wins
    /// over the file's `[tuning] profile`. Each file value it replaces is logged.
    #[arg(long, env = "SLUICE_PROFILE", value_name = "NAME", value_parser = profile_name)]
    pub profile: Option<String>,
}

fn profile_name(name: &str) -> Result<String, String> {
    sluice_tuning::profiles::find(name)
        .map(|p| p.name.to_owned())
        .map_err(|e| e.to_string())
}

/// `sluice tune …`.
#[derive(clap::Subcommand)]
pub enum TuneCommand {
    /// List the shipped profiles.
    Profiles,
    /// Print a profile with the reason for each value; with --config, the values it would
    /// change in that file, old → new.
    Show {
        /// Profile name.
        #[arg(value_parser = profile_name)]
        name: String,
    },
    /// Inspect this host for running the gateway (with --config: that config) and print
    /// what to change, with the command. Changes nothing. Exit 1 if the gateway would not
    /// start here.
    Check {
        /// Judge the config with this profile applied.
        #[arg(long, value_parser = profile_name)]
        profile: Option<String>,
        /// Concurrent client sessions to plan descriptors and ports for.
        #[arg(long, default_value_t = 1000)]
        sessions: u64,
        /// One JSON object: the plan and every finding.
        #[arg(long)]
        json: bool,
    },
}

/// Runs `sluice tune`; `config` is the global `--config`, if given.
pub fn run(config: Option<&Path>, command: TuneCommand) -> anyhow::Result<ExitCode> {
    match command {
        TuneCommand::Profiles => {
            // The first profile is what a gateway without one runs with.
            let label = |i: usize, name: &str| match i {
                0 => format!("{name} (default)"),
                _ => name.to_owned(),
            };
            let width = PROFILES.iter().map(|p| p.name.len()).max().unwrap_or(0) + 10;
            for (i, p) in PROFILES.iter().enumerate() {
                println!("{:<width$}  {}", label(i, p.name), p.summary());
            }
            println!("\nsluice tune show NAME [--config FILE]   # what it sets and why; what it would change");
            Ok(ExitCode::SUCCESS)
        }
        TuneCommand::Show { name } => {
            match config {
                None => print!("{}", sluice_tuning::profiles::find(&name)?.text),
                Some(path) => show_against(path, &name)?,
            }
            Ok(ExitCode::SUCCESS)
        }
        TuneCommand::Check {
            profile,
            sessions,
            json,
        } => {
            let gateway = match config {
                Some(path) => sluice_tuning::load(path, profile.as_deref())?.config,
                None => sluice_tuning::apply::without_file(profile.as_deref())?,
            };
            let plan = Plan::from_config(&gateway, sessions);
            let facts = HostFacts::read(&plan);
            let findings = check::evaluate(&facts, &plan);
            if json {
                let report = serde_json::json!({
                    "plan": plan,
                    "findings": findings,
                    "status": check::worst(&findings),
                });
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_owned())
                    .unwrap_or_else(|_| "this host".to_owned());
                print!("{}", check::render(&findings, &plan, &host));
            }
            Ok(if check::worst(&findings) == Status::Fail {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

/// The values `name` would change in the config at `path`, old (with where it comes
/// from) → new, then a check that the result loads.
fn show_against(path: &Path, name: &str) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config {}", path.display()))?;
    let before = sluice_tuning::effective_tunables(&text, None)
        .with_context(|| format!("in {}", path.display()))?;
    let after = sluice_tuning::effective_tunables(&text, Some(name))?;
    println!(
        "profile {name} on {} (a profile's values win over the file's):",
        path.display()
    );
    let mut changed = 0;
    let width = before.iter().map(|(k, _, _)| k.len()).max().unwrap_or(0);
    for ((key, old, origin), (_, new, _)) in before.iter().zip(&after) {
        if old != new {
            changed += 1;
            let old = format!("{} ({origin})", sluice_tuning::merge::show(old));
            println!(
                "  {key:<width$}  {old:<28} -> {}",
                sluice_tuning::merge::show(new)
            );
        }
    }
    let untouched = after
        .iter()
        .filter(|(_, _, o)| !matches!(o, Origin::Profile(_)))
        .count();
    if changed == 0 {
        println!("  nothing: the file already has every value of {name}");
    }
    println!("  ({untouched} other tuning keys keep the file's value or the default)");
    // The result must also be a config the gateway accepts.
    sluice_tuning::load(path, Some(name))?;
    println!("the result loads and validates.");
    Ok(())
}
