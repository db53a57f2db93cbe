//! `sluice policy`: the `[policy]` section checked and explained offline, from the config
//! file alone (no control needed).

use std::path::Path;

use anyhow::{anyhow, bail};
use sluice_control::admin::AdminRequest;
use sluice_control::config::ControlFile;
use sluice_control::policy::{render_summary, Decision, Policy, Subject};
use sluice_control::state::{now_ms, Grant, Revocation};

use crate::args;
use crate::output::{print, print_json};

/// `sluice policy`.
#[derive(clap::Subcommand)]
pub enum PolicyCommand {
    /// Check the config's [control], [identity] and [policy] sections offline.
    ///
    /// Prints every problem and exits 1, or prints what each group and user may do.
    Check {
        /// Print the summary as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Explain the decision for a user with some groups on a resource, now.
    ///
    /// Prints every rule considered, the grants and the verdict. Works offline from the
    /// config file; when control's admin socket answers, its live grants are included too.
    /// Revocations are not available through the admin API, so none are considered.
    ///
    /// With --query, also classifies the SQL and prints, for each statement, its class,
    /// flags, tables, functions and fingerprint, every statement rule considered and the
    /// verdict; and when the session has a masking profile, the masking plan for the
    /// result's columns (the query is described by the backend, with the gateway's
    /// credentials, never executed).
    Explain {
        /// The user (token subject).
        #[arg(long)]
        user: String,
        /// The user's groups, comma-separated (repeatable).
        #[arg(long, value_delimiter = ',', value_parser = args::group)]
        groups: Vec<String>,
        /// The resource.
        #[arg(long)]
        resource: String,
        /// A query string to judge as this user would send it on the resource (read with
        /// standard_conforming_strings on).
        #[arg(long)]
        query: Option<String>,
        /// Print the explanation as JSON (with --query: `{"session": ..., "statements": ...}`).
        #[arg(long)]
        json: bool,
    },
}

/// Loads the config's control sections and compiles the policy, or says everything that
/// is wrong.
fn load(config: &Path) -> anyhow::Result<(ControlFile, Policy)> {
    let file = ControlFile::load(config).map_err(|e| anyhow!(e))?;
    let policy = Policy::compile(&file.policy, &file.resource_names())
        .map_err(|e| anyhow!("in {}: {e}", config.display()))?;
    Ok((file, policy))
}

/// Runs a `sluice policy` subcommand.
pub fn run(config: &Path, command: PolicyCommand) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { json } => {
            let (file, policy) = load(config)?;
            let plural = |n: usize| if n == 1 { "" } else { "s" };
            let (rules, statements) = (
                policy.config().rules.len(),
                policy.config().statements.len(),
            );
            eprintln!(
                "{}: valid ({rules} rule{}, {statements} statement rule{}, resources: {})",
                config.display(),
                plural(rules),
                plural(statements),
                match file.resource_names() {
                    names if names.is_empty() => "none".to_owned(),
                    names => names.join(", "),
                }
            );
            if statements == 0 && rules > 0 {
                eprintln!(
                    "warning: no [[policy.statements]] rules: every statement is denied, even in sessions the rules allow"
                );
            }
            let summary = policy.summary();
            if json {
                print_json(&serde_json::to_value(&summary)?)
            } else {
                print(&render_summary(&summary))
            }
        }
        PolicyCommand::Explain {
            user,
            groups,
            resource,
            query,
            json,
        } => {
            let (file, policy) = load(config)?;
            if !file.resources.contains_key(&resource) {
                bail!(
                    "no resource named {resource:?} in {} (configured: {})",
                    config.display(),
                    file.resource_names().join(", ")
                );
            }
            let grants = live_grants(&file);
            let revocations: Vec<Revocation> = Vec::new();
            let now = now_ms();
            let subject = Subject {
                user: &user,
                groups: &groups,
            };
            let explanation = policy.explain(&subject, &resource, now, now, &grants, &revocations);
            let Some(query) = query else {
                return if json {
                    print_json(&serde_json::to_value(&explanation)?)
                } else {
                    print(&explanation.to_string())
                };
            };
            let classification =
                sluice_classify::Classifier::new(0).classify(query.as_bytes(), true);
            let statements =
                policy.explain_statements(&subject, &resource, &classification, query.as_bytes());
            // With a masking profile, the plan for the result's columns (described by the
            // backend; a failure to reach it is said, not fatal: the rest still stands).
            let masking = match &explanation.decision {
                Decision::Allow(allowed) => allowed.masking.and_then(|name| {
                    let profile = policy.config().masking.get(name)?;
                    Some(
                        crate::masking_plan::explain(config, &resource, name, profile, &query)
                            .unwrap_or_else(|e| {
                                format!("masking plan (profile {name:?}): not available: {e:#}\n")
                            }),
                    )
                }),
                Decision::Deny(_) => None,
            };
            if json {
                let mut both = serde_json::Map::new();
                both.insert("session".into(), serde_json::to_value(&explanation)?);
                both.insert("statements".into(), serde_json::to_value(&statements)?);
                if let Some(plan) = &masking {
                    both.insert("masking".into(), serde_json::Value::String(plan.clone()));
                }
                print_json(&serde_json::Value::Object(both))
            } else {
                match masking {
                    Some(plan) => print(&format!("{explanation}\n\n{statements}\n{plan}")),
                    None => print(&format!("{explanation}\n\n{statements}")),
                }
            }
        }
    }
}

/// Control's grants in force when its admin socket answers; none otherwise (said on stderr).
fn live_grants(file: &ControlFile) -> Vec<Grant> {
    let socket = sluice_control::service::paths::admin_socket(&file.state_dir());
    let answer = crate::admin::call(&socket, &AdminRequest::GrantsList)
        .and_then(|v| serde_json::from_value::<Vec<Grant>>(v).map_err(anyhow::Error::from));
    match answer {
        Ok(grants) => {
            eprintln!(
                "note: with {} live grant{} from control; revocations are not considered (the admin API does not list them)",
                grants.len(),
                if grants.len() == 1 { "" } else { "s" }
            );
            grants
        }
        Err(e) => {
            eprintln!(
                "note: from the config file only, without grants or revocations (control not reachable: {e:#})"
            );
            Vec::new()
        }
    }
}
