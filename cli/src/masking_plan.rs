//! `sluice policy explain --query` for a session with a masking profile: which result
//! column is masked by which rule, which are scanned by the content detectors and which
//! pass through. The columns come from the backend itself: the query is prepared (parsed
//! and described, never executed) with the gateway's credentials for the resource, so the
//! plan shown is the one the gateway would compute from the same RowDescription.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context};
use sluice_masker::plan::ColumnInfo;
use sluice_masker::{Masker, ProfileConfig};
use sluice_proxy::config::BackendTls;
use sluice_proxy::Config;

/// The masking plan of `query`'s result for `profile`, as text.
pub fn explain(
    config_path: &Path,
    resource: &str,
    name: &str,
    profile: &ProfileConfig,
    query: &str,
) -> anyhow::Result<String> {
    // The key only changes what `hash` and `format-preserving` print, not the plan.
    let masker = Masker::compile(name, profile, &[0; 32])
        .map_err(|e| anyhow::anyhow!("masking profile {name:?}: {e}"))?;
    let config = Config::load(config_path)?;
    let Some(target) = config.resources.get(resource) else {
        bail!("no resource named {resource:?}");
    };
    if target.tls != BackendTls::Disable {
        bail!(
            "resource {resource:?} is reached over TLS, which explaining a masking plan does not do yet; the profile's rules are listed above"
        );
    }
    let password = target.password(&config)?.unwrap_or_default();
    let mut client = postgres::Config::new()
        .host(&target.host)
        .port(target.port)
        .dbname(&target.database)
        .user(&target.user)
        .password(password)
        .application_name("sluice policy explain")
        .connect_timeout(std::time::Duration::from_secs(10))
        .connect(postgres::NoTls)
        .with_context(|| format!("connecting to resource {resource:?} to describe the query"))?;
    let statement = client
        .prepare(query)
        .with_context(|| format!("describing the query on resource {resource:?}"))?;
    let mut columns = Vec::with_capacity(statement.columns().len());
    for column in statement.columns() {
        let (table, source_column) = match (column.table_oid(), column.column_id()) {
            (Some(oid), Some(attnum)) if oid != 0 && attnum > 0 => {
                let row = client
                    .query_opt(
                        "SELECT n.nspname::text, c.relname::text, a.attname::text
                           FROM pg_catalog.pg_attribute a
                           JOIN pg_catalog.pg_class c ON c.oid = a.attrelid
                           JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                          WHERE a.attrelid = $1 AND a.attnum = $2",
                        &[&oid, &attnum],
                    )
                    .context("reading the catalog")?;
                match row {
                    Some(row) => (
                        Some(format!(
                            "{}.{}",
                            row.get::<_, String>(0),
                            row.get::<_, String>(1)
                        )),
                        Some(row.get::<_, String>(2)),
                    ),
                    None => (None, None),
                }
            }
            _ => (None, None),
        };
        columns.push(ColumnInfo {
            name: column.name().to_owned(),
            table,
            source_column,
            type_oid: column.type_().oid(),
        });
    }
    let verdicts = masker.describe_plan(&columns);
    let mut out = format!("masking plan for the result (profile {name:?}):\n");
    if columns.is_empty() {
        out.push_str("  the statement returns no rows; nothing to mask (error and notice text is still scanned)\n");
    }
    for (column, verdict) in columns.iter().zip(&verdicts) {
        let source = match (&column.table, &column.source_column) {
            (Some(table), Some(col)) => format!(", from {table}.{col}"),
            _ => String::new(),
        };
        let _ = writeln!(
            out,
            "  {:?} (type oid {}{source}): {verdict}",
            column.name, column.type_oid
        );
    }
    Ok(out)
}
