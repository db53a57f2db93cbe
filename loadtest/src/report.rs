//! What a run found: per-target results, the table on stdout, the JSON document, and the
//! --fail-if thresholds.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |ns: u64| ns as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_us: us(h.value_at_quantile(0.50)),
            p90_us: us(h.value_at_quantile(0.90)),
            p99_us: us(h.value_at_quantile(0.99)),
            p999_us: us(h.value_at_quantile(0.999)),
            max_us: us(h.max()),
            mean_us: h.mean() / 1000.0,
        }
    }
}

/// One target's run in one round.
#[derive(Debug, Clone, Serialize)]
pub struct RoundResult {
    pub round: u32,
    pub tps: f64,
    pub transactions: u64,
    pub failed_transactions: u64,
    pub measured_seconds: f64,
    pub latency: Latency,
    /// Connect + TLS + authentication, every connection opened in the run.
    pub connect: Latency,
    pub errors: BTreeMap<String, u64>,
    pub hangs: u64,
    /// This load generator's own CPU per transaction, µs.
    pub loadtest_cpu_us_per_txn: Option<f64>,
    /// CPU per transaction of each --pid process, µs.
    pub process_cpu_us_per_txn: BTreeMap<String, Option<f64>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub name: String,
    pub url: String,
    pub median_tps: f64,
    /// Median TPS over the first target's median TPS.
    pub ratio: f64,
    /// Over all rounds, merged.
    pub latency: Latency,
    pub connect: Latency,
    pub errors: BTreeMap<String, u64>,
    pub error_total: u64,
    pub hangs: u64,
    pub loadtest_cpu_us_per_txn: Option<f64>,
    pub process_cpu_us_per_txn: BTreeMap<String, Option<f64>>,
    pub rounds: Vec<RoundResult>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub workload: String,
    pub protocol: String,
    pub connections: u32,
    pub threads: usize,
    pub pipeline: u32,
    pub rate: Option<f64>,
    pub duration_s: f64,
    pub transactions: Option<u64>,
    pub warmup_s: f64,
    pub rounds: u32,
    pub reconnect_every: Option<u64>,
    pub driver: String,
    pub cores: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub targets: Vec<TargetReport>,
    pub failed_thresholds: Vec<String>,
}

pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn median_opt(values: impl Iterator<Item = Option<f64>>) -> Option<f64> {
    let mut v: Vec<f64> = values.flatten().collect();
    (!v.is_empty()).then(|| median(&mut v))
}

fn fmt_us(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2}s", us / 1e6)
    } else if us >= 1000.0 {
        format!("{:.2}ms", us / 1e3)
    } else {
        format!("{us:.0}µs")
    }
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

impl Report {
    /// The human-readable table printed on stdout.
    pub fn table(&self) -> String {
        let s = &self.settings;
        let mut out = String::new();
        let load = match s.rate {
            Some(r) => format!("open loop at {r} TPS"),
            None => "closed loop".into(),
        };
        let length = match s.transactions {
            Some(t) => format!("{t} transactions"),
            None => format!("{}s", s.duration_s),
        };
        let _ = writeln!(
            out,
            "workload {} ({}), {} connections, {} threads, pipeline {}, {load}, {length} \
             after {}s warm-up, {} round(s), {} driver, {} cores",
            s.workload,
            s.protocol,
            s.connections,
            s.threads,
            s.pipeline,
            s.warmup_s,
            s.rounds,
            s.driver,
            s.cores
        );
        let pid_names: Vec<&String> = self
            .targets
            .iter()
            .flat_map(|t| t.process_cpu_us_per_txn.keys())
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let _ = write!(
            out,
            "\n| target | median TPS | ratio | rounds TPS | p50 | p90 | p99 | p99.9 | max | errors | loadtest CPU µs/txn |"
        );
        for name in &pid_names {
            let _ = write!(out, " {name} CPU µs/txn |");
        }
        let _ = write!(out, "\n|---|---|---|---|---|---|---|---|---|---|---|");
        for _ in &pid_names {
            out.push_str("---|");
        }
        out.push('\n');
        for t in &self.targets {
            let rounds: Vec<String> = t.rounds.iter().map(|r| format!("{:.0}", r.tps)).collect();
            let errors = if t.errors.is_empty() {
                "0".to_string()
            } else {
                t.errors
                    .iter()
                    .map(|(k, v)| format!("{k}×{v}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            let l = &t.latency;
            let _ = write!(
                out,
                "| {} | {:.0} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |",
                t.name,
                t.median_tps,
                t.ratio,
                rounds.join(" "),
                fmt_us(l.p50_us),
                fmt_us(l.p90_us),
                fmt_us(l.p99_us),
                fmt_us(l.p999_us),
                fmt_us(l.max_us),
                errors,
                fmt_opt(t.loadtest_cpu_us_per_txn)
            );
            for name in &pid_names {
                let v = t.process_cpu_us_per_txn.get(*name).copied().flatten();
                let _ = write!(out, " {} |", fmt_opt(v));
            }
            out.push('\n');
        }
        if self.targets.iter().any(|t| t.connect.count > 0) {
            out.push_str("\nconnect + handshake (every connection opened):\n");
            for t in &self.targets {
                let c = &t.connect;
                let _ = writeln!(
                    out,
                    "  {}: {} connections, p50 {}, p99 {}, max {}",
                    t.name,
                    c.count,
                    fmt_us(c.p50_us),
                    fmt_us(c.p99_us),
                    fmt_us(c.max_us)
                );
            }
        }
        out
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Metric {
    P50,
    P90,
    P99,
    P999,
    Max,
    Tps,
    Errors,
    Ratio,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Gt,
    Ge,
    Lt,
    Le,
}

/// A --fail-if condition: the run fails when it holds for any target.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    text: String,
    metric: Metric,
    op: Op,
    value: f64,
}

impl Threshold {
    pub fn parse(text: &str) -> Result<Threshold> {
        let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let pos = t
            .find(['<', '>'])
            .context("a condition looks like p99>5ms, tps<1000, errors>0 or ratio<0.8")?;
        let (name, rest) = t.split_at(pos);
        let (op, value) = if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix('>') {
            (Op::Gt, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else {
            bail!("no comparison in {text:?}");
        };
        let metric = match name.to_ascii_lowercase().as_str() {
            "p50" => Metric::P50,
            "p90" => Metric::P90,
            "p99" => Metric::P99,
            "p999" | "p99.9" => Metric::P999,
            "max" => Metric::Max,
            "tps" => Metric::Tps,
            "errors" => Metric::Errors,
            "ratio" => Metric::Ratio,
            other => {
                bail!("unknown metric {other:?} (p50, p90, p99, p999, max, tps, errors, ratio)")
            }
        };
        let value = match metric {
            Metric::P50 | Metric::P90 | Metric::P99 | Metric::P999 | Metric::Max => {
                parse_latency_us(value)?
            }
            _ => value
                .parse::<f64>()
                .with_context(|| format!("{value:?} is not a number"))?,
        };
        Ok(Threshold {
            text: text.to_string(),
            metric,
            op,
            value,
        })
    }

    /// `Some(message)` when the condition holds for `target`.
    pub fn check(&self, target: &TargetReport) -> Option<String> {
        let l = &target.latency;
        let actual = match self.metric {
            Metric::P50 => l.p50_us,
            Metric::P90 => l.p90_us,
            Metric::P99 => l.p99_us,
            Metric::P999 => l.p999_us,
            Metric::Max => l.max_us,
            Metric::Tps => target.median_tps,
            Metric::Errors => target.error_total as f64,
            Metric::Ratio => target.ratio,
        };
        let holds = match self.op {
            Op::Gt => actual > self.value,
            Op::Ge => actual >= self.value,
            Op::Lt => actual < self.value,
            Op::Le => actual <= self.value,
        };
        holds.then(|| {
            let shown = match self.metric {
                Metric::P50 | Metric::P90 | Metric::P99 | Metric::P999 | Metric::Max => {
                    fmt_us(actual)
                }
                Metric::Tps => format!("{actual:.0}"),
                Metric::Errors => format!("{actual:.0}"),
                Metric::Ratio => format!("{actual:.3}"),
            };
            format!(
                "threshold {:?} failed for target {}: measured {shown}",
                self.text, target.name
            )
        })
    }
}

fn parse_latency_us(v: &str) -> Result<f64> {
    let split = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .context("a latency needs a unit: us, ms or s")?;
    let (num, unit) = v.split_at(split);
    let n: f64 = num
        .parse()
        .with_context(|| format!("{num:?} is not a number"))?;
    Ok(match unit {
        "us" | "µs" => n,
        "ms" => n * 1e3,
        "s" => n * 1e6,
        other => bail!("unknown latency unit {other:?} (us, ms, s)"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(p99_us: f64, tps: f64, errors: u64, ratio: f64) -> TargetReport {
        TargetReport {
            name: "t".into(),
            url: String::new(),
            median_tps: tps,
            ratio,
            latency: Latency {
                p99_us,
                ..Latency::default()
            },
            connect: Latency::default(),
            errors: BTreeMap::new(),
            error_total: errors,
            hangs: 0,
            loadtest_cpu_us_per_txn: None,
            process_cpu_us_per_txn: BTreeMap::new(),
            rounds: Vec::new(),
        }
    }

    #[test]
    fn thresholds_parse_and_check() {
        let t = Threshold::parse("p99>5ms").expect("parse");
        assert!(t.check(&target(6000.0, 1.0, 0, 1.0)).is_some());
        assert!(t.check(&target(4000.0, 1.0, 0, 1.0)).is_none());
        let t = Threshold::parse("tps < 1000").expect("parse");
        assert!(t.check(&target(1.0, 999.0, 0, 1.0)).is_some());
        let t = Threshold::parse("errors>0").expect("parse");
        let msg = t.check(&target(1.0, 1.0, 3, 1.0)).expect("fails");
        assert!(msg.contains("errors>0") && msg.contains('3'), "{msg}");
        assert!(Threshold::parse("ratio<0.9")
            .expect("parse")
            .check(&target(1.0, 1.0, 0, 0.5))
            .is_some());
        assert_eq!(Threshold::parse("p999>=1.5s").expect("parse").value, 1.5e6);
        assert!(Threshold::parse("p99>5").is_err());
        assert!(Threshold::parse("p42>5ms").is_err());
        assert!(Threshold::parse("tps=5").is_err());
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), 2.5);
        assert_eq!(median(&mut []), 0.0);
    }
}
