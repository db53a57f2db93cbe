//! `sluice top` and the gateway half of `sluice status`: clients of the gateway's
//! observability endpoint (`[metrics] listen`), which serves what the workers measured.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;
use sluice_proxy::metrics::TopEntry;
use sluice_proxy::observe::TopReply;

use crate::output::{print, print_json};

/// Options of `sluice top`.
#[derive(clap::Args)]
pub struct TopArgs {
    /// Only this resource.
    #[arg(long)]
    resource: Option<String>,
    /// Order: added-latency (total time the gateway added), count, rows, or time (total
    /// time from sending to the answer).
    #[arg(long, default_value = "added-latency")]
    by: String,
    /// Rows to show.
    #[arg(long, default_value_t = 20)]
    limit: usize,
    /// Refresh every N seconds until interrupted.
    #[arg(long)]
    watch: Option<u64>,
    /// Print the raw JSON.
    #[arg(long)]
    json: bool,
    /// The endpoint (default: `[metrics] listen` from the config).
    #[arg(long)]
    url: Option<String>,
}

/// The endpoint's base URL from the config file.
pub fn endpoint(config: &Path) -> anyhow::Result<Option<String>> {
    let config = sluice_proxy::Config::load(config)?;
    Ok(config.metrics.listen.map(|addr| format!("http://{addr}")))
}

fn get(url: &str) -> anyhow::Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .with_context(|| format!("asking the gateway at {url} (is it running?)"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .with_context(|| format!("reading the answer from {url}"))?;
    Ok((status, body))
}

/// `sluice top`.
pub fn top(config: Option<&Path>, args: TopArgs) -> anyhow::Result<()> {
    let base = match (&args.url, config) {
        (Some(url), _) => url.trim_end_matches('/').to_owned(),
        (None, Some(config)) => endpoint(config)?
            .context("the gateway has no metrics endpoint: set [metrics] listen in the config")?,
        (None, None) => anyhow::bail!(
            "sluice top needs --url or a configuration (--config FILE or $SLUICE_CONFIG)"
        ),
    };
    let mut url = format!("{base}/top?by={}&limit={}", args.by, args.limit);
    if let Some(resource) = &args.resource {
        url.push_str("&resource=");
        url.push_str(resource);
    }
    loop {
        let (status, body) = get(&url)?;
        if status != 200 {
            anyhow::bail!("the gateway answered {status}: {}", body.trim());
        }
        if args.json {
            let value: Value = serde_json::from_str(&body).context("parsing /top")?;
            print_json(&value)?;
        } else {
            let reply: TopReply = serde_json::from_str(&body).context("parsing /top")?;
            if args.watch.is_some() {
                // Clear the screen and home the cursor, like top(1).
                print!("\x1b[2J\x1b[H");
            }
            print(&render_top(&reply))?;
        }
        match args.watch {
            Some(secs) => std::thread::sleep(Duration::from_secs(secs.max(1))),
            None => return Ok(()),
        }
    }
}

fn micros(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

/// The table `sluice top` prints.
pub fn render_top(reply: &TopReply) -> String {
    let mut out = String::new();
    if reply.entries.is_empty() {
        out.push_str("no statements yet\n");
        return out;
    }
    out.push_str(&format!(
        "{:>10} {:>7} {:>10} {:>10} {:>10} {:>10} {:<8} {:<10} statement\n",
        "calls", "errors", "rows", "added µs", "max µs", "mean ms", "class", "resource"
    ));
    for e in &reply.entries {
        out.push_str(&row(e, reply.latency_measured));
    }
    if !reply.latency_measured {
        out.push_str("(added latency is not measured: [metrics] latency = false)\n");
    }
    if reply.entries.iter().any(|e| e.error > 0) {
        out.push_str(
            "(calls marked ~ may be over-counted by a fingerprint evicted from the table)\n",
        );
    }
    out
}

fn row(e: &TopEntry, measured: bool) -> String {
    let added = if measured && e.added_samples > 0 {
        micros(e.added_sum_ns / e.added_samples)
    } else {
        "-".to_owned()
    };
    let max = if measured && e.added_samples > 0 {
        micros(e.added_max_ns)
    } else {
        "-".to_owned()
    };
    let mean_ms = if e.count > 0 {
        format!("{:.3}", e.total_us as f64 / e.count as f64 / 1000.0)
    } else {
        "-".to_owned()
    };
    let calls = if e.error > 0 {
        format!("~{}", e.count)
    } else {
        e.count.to_string()
    };
    let statement: String = e.statement.chars().take(80).collect();
    format!(
        "{calls:>10} {:>7} {:>10} {added:>10} {max:>10} {mean_ms:>10} {:<8} {:<10} {}\n",
        e.errors,
        e.rows,
        e.class,
        e.resource,
        statement.replace('\n', " ")
    )
}

/// The gateway's readiness as `sluice status` shows it: the text and whether it is ready.
pub fn gateway_status(base: &str, json: bool) -> anyhow::Result<(String, bool)> {
    let (status, body) = get(&format!("{base}/readyz"))?;
    let value: Value = serde_json::from_str(&body)
        .with_context(|| format!("parsing the gateway's /readyz ({status})"))?;
    let ready = value["ready"].as_bool().unwrap_or(false);
    if json {
        return Ok((serde_json::to_string_pretty(&value)? + "\n", ready));
    }
    let mut out = format!(
        "gateway:           {} ({base})\n",
        if ready { "ready" } else { "NOT READY" }
    );
    for problem in value["problems"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "  problem:         {}\n",
            problem.as_str().unwrap_or("?")
        ));
    }
    for w in value["workers"].as_array().into_iter().flatten() {
        let age = w["snapshot_age_secs"]
            .as_f64()
            .map_or("never".to_owned(), |a| format!("{a:.1} s ago"));
        out.push_str(&format!(
            "  worker {}:        {}, snapshot generation {} ({}; control heard {age}), {} connections\n",
            w["worker"],
            if w["ticking"].as_bool() == Some(true) { "ticking" } else { "STUCK" },
            w["snapshot_generation"],
            if w["snapshot_fresh"].as_bool() == Some(true) { "fresh" } else { "STALE" },
            w["connections"],
        ));
    }
    for b in value["backends"].as_array().into_iter().flatten() {
        let state = if b["reachable"].as_bool() == Some(true) {
            format!("reachable ({} µs to connect)", b["connect_us"])
        } else {
            format!("UNREACHABLE: {}", b["error"].as_str().unwrap_or("?"))
        };
        out.push_str(&format!(
            "  resource {}: {state}\n",
            b["resource"].as_str().unwrap_or("?")
        ));
    }
    Ok((out, ready))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(statement: &str, count: u64, error: u64) -> TopEntry {
        TopEntry {
            fingerprint: "00000000000000aa".into(),
            resource: "shop".into(),
            class: "read".into(),
            statement: statement.into(),
            count,
            error,
            errors: 1,
            rows: 10,
            total_us: 3_000,
            added_samples: 2,
            added_sum_ns: 30_000,
            added_max_ns: 20_000,
        }
    }

    #[test]
    fn the_table_shows_means_and_marks_estimates() {
        let reply = TopReply {
            latency_measured: true,
            entries: vec![
                entry("SELECT $1", 3, 0),
                entry("UPDATE t\nSET a = $1", 9, 2),
            ],
        };
        let text = render_top(&reply);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].contains("calls") && lines[0].contains("statement"));
        assert!(
            lines[1].contains(" 15.0 ") && lines[1].contains(" 20.0 "),
            "{text}"
        );
        assert!(lines[1].contains(" 1.000 ") && lines[1].ends_with("SELECT $1"));
        assert!(lines[2].contains("~9") && lines[2].ends_with("UPDATE t SET a = $1"));
        assert!(text.contains("over-counted"));
        let unmeasured = render_top(&TopReply {
            latency_measured: false,
            entries: vec![entry("SELECT 1", 1, 0)],
        });
        assert!(unmeasured.contains("not measured"));
        assert_eq!(
            render_top(&TopReply {
                latency_measured: true,
                entries: vec![]
            }),
            "no statements yet\n"
        );
    }
}
