//! One-connection chores before the load: pgbench's schema (`--init`) and its scale.

use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};

use crate::client::Conn;
use crate::url::Target;
use crate::workload::ACCOUNTS_PER_SCALE;

/// Connects once and runs `f` on a throwaway runtime on this thread.
pub fn with_conn<T>(
    target: &Target,
    tls: Option<&Arc<rustls::ClientConfig>>,
    f: impl AsyncFnOnce(&mut Conn) -> Result<T>,
) -> Result<T> {
    crate::runtime::block_on(async move {
        let mut conn = Conn::connect(target, tls)
            .await
            .map_err(|e| anyhow!("cannot connect to {target}: {e}"))?;
        let out = f(&mut conn).await;
        conn.close().await;
        out
    })
}

/// The statements pgbench's server-side initialisation (`-I dtGvp`) runs, at `scale`.
pub fn init_statements(scale: i64) -> Vec<String> {
    vec![
        "SET client_min_messages = warning".into(),
        "DROP TABLE IF EXISTS pgbench_accounts, pgbench_branches, pgbench_history, pgbench_tellers"
            .into(),
        "CREATE TABLE pgbench_history (tid int, bid int, aid int, delta int, mtime timestamp, filler char(22))".into(),
        "CREATE TABLE pgbench_tellers (tid int NOT NULL, bid int, tbalance int, filler char(84)) WITH (fillfactor = 100)".into(),
        "CREATE TABLE pgbench_accounts (aid int NOT NULL, bid int, abalance int, filler char(84)) WITH (fillfactor = 100)".into(),
        "CREATE TABLE pgbench_branches (bid int NOT NULL, bbalance int, filler char(88)) WITH (fillfactor = 100)".into(),
        format!("INSERT INTO pgbench_branches (bid, bbalance) SELECT b, 0 FROM generate_series(1, {scale}) AS b"),
        format!(
            "INSERT INTO pgbench_tellers (tid, bid, tbalance) SELECT t, (t - 1) / 10 + 1, 0 FROM generate_series(1, {}) AS t",
            10 * scale
        ),
        format!(
            "INSERT INTO pgbench_accounts (aid, bid, abalance, filler) SELECT a, (a - 1) / {ACCOUNTS_PER_SCALE} + 1, 0, '' FROM generate_series(1, {}) AS a",
            ACCOUNTS_PER_SCALE * scale
        ),
        "VACUUM ANALYZE pgbench_branches, pgbench_tellers, pgbench_accounts, pgbench_history".into(),
        "ALTER TABLE pgbench_branches ADD PRIMARY KEY (bid)".into(),
        "ALTER TABLE pgbench_tellers ADD PRIMARY KEY (tid)".into(),
        "ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)".into(),
    ]
}

pub fn init(target: &Target, tls: Option<&Arc<rustls::ClientConfig>>, scale: i64) -> Result<()> {
    with_conn(target, tls, async |conn: &mut Conn| {
        for sql in init_statements(scale) {
            conn.query_column(&sql)
                .await
                .map_err(|e| anyhow!("{e}"))
                .with_context(|| format!("--init: {sql}"))?;
        }
        Ok(())
    })
}

/// The scale pgbench's tables were created with (rows in pgbench_branches).
pub fn detect_scale(target: &Target, tls: Option<&Arc<rustls::ClientConfig>>) -> Result<i64> {
    let rows = with_conn(target, tls, async |conn: &mut Conn| {
        conn.query_column("SELECT count(*) FROM pgbench_branches")
            .await
            .map_err(|e| anyhow!("{e}"))
    })
    .context("cannot find pgbench's tables (create them with --init, or give --scale)")?;
    let scale: i64 = rows
        .first()
        .cloned()
        .flatten()
        .and_then(|s| s.parse().ok())
        .context("unexpected answer counting pgbench_branches")?;
    if scale < 1 {
        bail!("pgbench_branches is empty: run --init again");
    }
    Ok(scale)
}
