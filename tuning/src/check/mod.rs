//! `sluice tune check`: what this host and this process's limits mean for a gateway with a
//! given config, each reading judged OK / WARN / FAIL with why it matters and the command
//! that changes it.
//!
//! [`HostFacts`] holds the raw text of every file read (and the io_uring probe's result);
//! [`evaluate`] turns it into [`Finding`]s without touching the host, so every rule is
//! tested with fixture strings. FAIL is kept for what would stop the gateway from starting
//! with this config; everything it survives (falling back to epoll, queues the kernel
//! truncates) is a WARN.

mod host;
pub mod parse;

use serde::Serialize;
use sluice_proxy::config::Driver;
use sluice_proxy::Config;

use parse::{Limit, SoftHard};

/// Every item [`evaluate`] reports on, in order.
pub const ITEMS: &[&str] = &[
    "cores",
    "io_uring",
    "memlock",
    "somaxconn",
    "nofile",
    "file-max",
    "ephemeral-ports",
    "thp",
    "cpu-governor",
];

/// What the gateway will ask of the host: read from its config, plus the number of
/// concurrent sessions to plan for (the config has no connection limit).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// `listen.workers` as configured (`0`: one per usable core).
    pub workers: usize,
    /// `listen.driver`.
    pub driver: String,
    /// `listen.uring_entries`.
    pub uring_entries: u32,
    /// `io.uring_coop_taskrun`.
    pub uring_coop_taskrun: bool,
    /// `io.uring_sqpoll`.
    pub uring_sqpoll: bool,
    /// `io.uring_sqpoll_idle_ms`.
    pub uring_sqpoll_idle_ms: u32,
    /// `io.backlog`.
    pub backlog: u32,
    /// Concurrent client sessions to plan descriptors and ports for.
    pub sessions: u64,
}

impl Plan {
    /// The plan for `config` with `sessions` concurrent sessions.
    pub fn from_config(config: &Config, sessions: u64) -> Plan {
        Plan {
            workers: config.listen.workers,
            driver: config.listen.driver.to_string(),
            uring_entries: config.listen.uring_entries,
            uring_coop_taskrun: config.io.uring_coop_taskrun,
            uring_sqpoll: config.io.uring_sqpoll,
            uring_sqpoll_idle_ms: config.io.uring_sqpoll_idle_ms,
            backlog: config.io.backlog,
            sessions,
        }
    }

    fn uses_io_uring(&self) -> bool {
        self.driver == Driver::IoUring.to_string()
    }
}

/// What the kernel said when asked for a ring with each flag set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringProbe {
    /// No setup flags.
    pub plain: Result<(), String>,
    /// `COOP_TASKRUN | TASKRUN_FLAG`.
    pub coop_taskrun: Result<(), String>,
    /// `SQPOLL`.
    pub sqpoll: Result<(), String>,
}

/// Raw readings of the host; `None` where a file could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostFacts {
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// `/sys/devices/system/cpu/online`.
    pub cpus_online: Option<String>,
    /// `/proc/self/status` (for `Cpus_allowed_list`).
    pub self_status: Option<String>,
    /// `/proc/self/limits`.
    pub self_limits: Option<String>,
    /// `/proc/sys/net/core/somaxconn`.
    pub somaxconn: Option<String>,
    /// `/proc/sys/fs/file-max`.
    pub file_max: Option<String>,
    /// `/sys/kernel/mm/transparent_hugepage/enabled`.
    pub thp_enabled: Option<String>,
    /// `/sys/kernel/mm/transparent_hugepage/defrag`.
    pub thp_defrag: Option<String>,
    /// `(cpuN, scaling_governor)` for every CPU that has cpufreq.
    pub governors: Vec<(String, String)>,
    /// `/proc/sys/kernel/io_uring_disabled` (absent before Linux 6.6).
    pub io_uring_disabled: Option<String>,
    /// `/proc/sys/net/ipv4/ip_local_port_range`.
    pub ip_local_port_range: Option<String>,
    /// Rings the kernel would (not) set up.
    pub uring: UringProbe,
}

/// How a reading bears on running the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Nothing to do.
    Ok,
    /// The gateway runs, but slower, less safely or with less headroom than it could.
    Warn,
    /// The gateway would not start with this config.
    Fail,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Ok => "OK",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        })
    }
}

/// One judged reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// One of [`ITEMS`].
    pub item: &'static str,
    /// The judgement.
    pub status: Status,
    /// What the host says, with the numbers it was compared against.
    pub reading: String,
    /// Why it matters for Sluice.
    pub why: String,
    /// Commands or settings that change it (empty when nothing needs to change).
    pub fix: Vec<String>,
}

impl Finding {
    fn new(item: &'static str, status: Status, reading: String, why: &str) -> Finding {
        Finding {
            item,
            status,
            reading,
            why: why.to_owned(),
            fix: Vec::new(),
        }
    }

    fn fix(mut self, fix: impl IntoIterator<Item = String>) -> Finding {
        self.fix.extend(fix);
        self
    }
}

/// Commands that set a sysctl now and after a reboot.
fn sysctl(key: &str, value: &str) -> [String; 2] {
    let quoted = if value.contains(' ') {
        format!("\"{value}\"")
    } else {
        value.to_owned()
    };
    [
        format!("sysctl -w {key}={quoted}"),
        format!(
            "echo '{key} = {value}' >> /etc/sysctl.d/90-sluice.conf   # keeps it after a reboot"
        ),
    ]
}

/// Descriptors a gateway needs before any client connects: the process's own (logs,
/// control sockets, mimalloc, stdio) and per worker its listener, io_uring ring and
/// eventfd, tick socket, audit file and recording segment, lock and directory.
fn descriptors_to_start(workers: u64) -> u64 {
    64 + 16 * workers
}

/// Approximate bytes a ring of `entries` pins: 64-byte SQEs, twice as many 16-byte CQEs,
/// the index array and the two ring headers. The kernel rounds `entries` up to a power of
/// two.
fn ring_bytes(entries: u32) -> u64 {
    let entries = u64::from(entries.max(1).next_power_of_two());
    entries * 64 + entries * 2 * 16 + entries * 4 + 2 * 4096
}

/// Judges `facts` for `plan`. Pure: the same facts always give the same findings.
pub fn evaluate(facts: &HostFacts, plan: &Plan) -> Vec<Finding> {
    let usable = facts
        .self_status
        .as_deref()
        .and_then(|s| parse::status_field(s, "Cpus_allowed_list"))
        .and_then(parse::cpu_list)
        .map(|cpus| cpus.len());
    let workers = match plan.workers {
        0 => usable.unwrap_or(1).max(1),
        n => n,
    } as u64;
    let limits = facts.self_limits.as_deref().unwrap_or_default();
    vec![
        cores(facts, plan, usable, workers),
        io_uring(facts, plan),
        memlock(
            facts,
            plan,
            parse::limit(limits, "Max locked memory"),
            workers,
        ),
        somaxconn(facts, plan),
        nofile(parse::limit(limits, "Max open files"), plan, workers),
        file_max(facts, plan, workers),
        ephemeral_ports(facts, plan),
        thp(facts),
        governor(facts),
    ]
}

fn unreadable(item: &'static str, what: &str, why: &str) -> Finding {
    Finding::new(
        item,
        Status::Ok,
        format!("{what} could not be read; not judged"),
        why,
    )
}

fn cores(facts: &HostFacts, plan: &Plan, usable: Option<usize>, workers: u64) -> Finding {
    const WHY: &str = "Each worker is a thread pinned to a core of its own; a worker that shares \
        a core waits for the other, and a wake-up that crosses cores costs 25-35 µs on VMs.";
    let online = facts
        .cpus_online
        .as_deref()
        .and_then(parse::cpu_list)
        .map(|c| c.len());
    let Some(usable) = usable else {
        return unreadable("cores", "/proc/self/status Cpus_allowed_list", WHY);
    };
    let online = online.map_or_else(|| "?".to_owned(), |n| n.to_string());
    let configured = match plan.workers {
        0 => "listen.workers = 0: one per usable core".to_owned(),
        n => format!("listen.workers = {n}"),
    };
    let reading = format!(
        "{online} online, {usable} usable by this process; {workers} workers ({configured})"
    );
    let usable = usable as u64;
    if workers > usable {
        return Finding::new("cores", Status::Warn, reading, WHY).fix([
            "listen.workers = 0 in sluice.toml (one worker per usable core)".to_owned(),
            "or give the gateway more CPUs: CPUAffinity= in its systemd unit, taskset -c for a shell".to_owned(),
        ]);
    }
    if plan.uring_sqpoll && usable < 2 * workers {
        return Finding::new(
            "cores",
            Status::Warn,
            format!("{reading}; io.uring_sqpoll = true starts a polling kernel thread per worker"),
            "An SQPOLL thread spins on a core of its own while there is work: with fewer than two \
             usable cores per worker it takes CPU from the workers and from PostgreSQL (design.md §7).",
        )
        .fix(["io.uring_sqpoll = false in sluice.toml".to_owned()]);
    }
    Finding::new("cores", Status::Ok, reading, WHY)
}

fn io_uring(facts: &HostFacts, plan: &Plan) -> Finding {
    const WHY: &str = "Workers use io_uring to batch socket reads and writes (about 0.2 system \
        calls per round trip under load, against 6 with epoll); where the kernel refuses it a \
        worker falls back to epoll, which works but costs more CPU per statement.";
    let disabled = facts.io_uring_disabled.as_deref().and_then(parse::number);
    let sysctl_reading = match disabled {
        Some(v) => format!("kernel.io_uring_disabled = {v}"),
        None => "kernel.io_uring_disabled absent (kernel before 6.6: io_uring allowed)".to_owned(),
    };
    let describe = |r: &Result<(), String>| match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("refused ({e})"),
    };
    let probe = &facts.uring;
    let reading = format!(
        "ring of {} entries: {}; COOP_TASKRUN: {}; SQPOLL: {}{}; {sysctl_reading}",
        plan.uring_entries,
        describe(&probe.plain),
        describe(&probe.coop_taskrun),
        describe(&probe.sqpoll),
        if plan.uring_sqpoll {
            ""
        } else {
            " (not configured)"
        },
    );
    if !plan.uses_io_uring() {
        return Finding::new(
            "io_uring",
            Status::Ok,
            format!("not used (listen.driver = {}); {reading}", plan.driver),
            WHY,
        );
    }
    if probe.plain.is_err() {
        let mut fix = Vec::new();
        if disabled.is_some_and(|v| v > 0) {
            fix.extend(sysctl("kernel.io_uring_disabled", "0"));
        } else {
            fix.push(
                "in a container: a seccomp profile that allows io_uring_setup, io_uring_enter and \
                 io_uring_register (the default profiles of Docker 25+ and containerd block them)"
                    .to_owned(),
            );
        }
        fix.push(
            "or listen.driver = \"epoll\" in sluice.toml, to choose epoll without the warning"
                .to_owned(),
        );
        return Finding::new("io_uring", Status::Warn, reading, WHY).fix(fix);
    }
    if plan.uring_coop_taskrun && probe.coop_taskrun.is_err() {
        return Finding::new(
            "io_uring",
            Status::Warn,
            reading,
            "COOP_TASKRUN (Linux 5.19) lets completions wait for the worker instead of \
             interrupting it; without it workers run, with ~4x more interrupts when busy.",
        )
        .fix([
            "a kernel of 5.19 or later".to_owned(),
            "or io.uring_coop_taskrun = false in sluice.toml, to go without the warning".to_owned(),
        ]);
    }
    if plan.uring_sqpoll && probe.sqpoll.is_err() {
        return Finding::new(
            "io_uring",
            Status::Warn,
            reading,
            "SQPOLL is configured but refused (before Linux 5.11 it needs CAP_SYS_ADMIN): \
             workers start without it and log a warning each.",
        )
        .fix([
            "io.uring_sqpoll = false in sluice.toml".to_owned(),
            "or run the gateway with CAP_SYS_ADMIN (AmbientCapabilities=CAP_SYS_ADMIN), or on Linux 5.11+".to_owned(),
        ]);
    }
    Finding::new("io_uring", Status::Ok, reading, WHY)
}

fn memlock(facts: &HostFacts, plan: &Plan, limit: Option<SoftHard>, workers: u64) -> Finding {
    const WHY: &str = "Before Linux 5.12 every io_uring ring's memory is charged to \
        RLIMIT_MEMLOCK (often 64 KiB); a worker whose ring does not fit falls back to epoll.";
    let need = workers * ring_bytes(plan.uring_entries);
    let Some(limit) = limit else {
        return unreadable("memlock", "Max locked memory in /proc/self/limits", WHY);
    };
    let version = facts
        .kernel_release
        .as_deref()
        .and_then(parse::kernel_version);
    let reading = format!(
        "RLIMIT_MEMLOCK soft {} / hard {}; {workers} rings of {} entries need ~{} KiB",
        limit.soft,
        limit.hard,
        plan.uring_entries,
        need.div_ceil(1024)
    );
    if !plan.uses_io_uring() {
        return Finding::new(
            "memlock",
            Status::Ok,
            format!("{reading}; io_uring not used"),
            WHY,
        );
    }
    match version {
        Some(v) if v >= (5, 12) => Finding::new(
            "memlock",
            Status::Ok,
            format!(
                "{reading}; kernel {}.{} charges rings to the memory cgroup instead",
                v.0, v.1
            ),
            WHY,
        ),
        _ if limit.soft.allows(need) => Finding::new("memlock", Status::Ok, reading, WHY),
        _ => {
            let kib = need.div_ceil(1024) * 2;
            Finding::new("memlock", Status::Warn, reading, WHY).fix([
                format!(
                    "LimitMEMLOCK={}K in the gateway's systemd unit ([Service])",
                    kib
                ),
                format!("ulimit -l {kib}   # this shell, up to the hard limit"),
                "or a smaller listen.uring_entries (the small-host profile uses 256)".to_owned(),
            ])
        }
    }
}

fn somaxconn(facts: &HostFacts, plan: &Plan) -> Finding {
    const WHY: &str = "The kernel silently caps each listener's backlog (io.backlog) at \
        net.core.somaxconn; when the queue is full, new connections wait for SYN retransmits \
        (1 s, 3 s, ...) during reconnect storms.";
    let Some(value) = facts.somaxconn.as_deref().and_then(parse::number) else {
        return unreadable("somaxconn", "/proc/sys/net/core/somaxconn", WHY);
    };
    let reading = format!(
        "net.core.somaxconn = {value}, io.backlog = {}",
        plan.backlog
    );
    if value < u64::from(plan.backlog) {
        Finding::new(
            "somaxconn",
            Status::Warn,
            format!("{reading}: each listener queues at most {value}"),
            WHY,
        )
        .fix(sysctl("net.core.somaxconn", &plan.backlog.to_string()))
    } else {
        Finding::new("somaxconn", Status::Ok, reading, WHY)
    }
}

fn nofile(limit: Option<SoftHard>, plan: &Plan, workers: u64) -> Finding {
    const WHY: &str = "Every session holds two descriptors (client and backend socket) on top of \
        what the workers need to start; at the limit, accept fails and clients are turned away. \
        These are the limits of this process: a systemd unit sets its own (LimitNOFILE=).";
    let Some(limit) = limit else {
        return unreadable("nofile", "Max open files in /proc/self/limits", WHY);
    };
    let start = descriptors_to_start(workers);
    let need = start + 2 * plan.sessions;
    let reading = format!(
        "RLIMIT_NOFILE soft {} / hard {}; {workers} workers need ~{start} to start, {} sessions ~{need}",
        limit.soft, limit.hard, plan.sessions
    );
    let target = need.next_power_of_two().max(65_536);
    let fixes = |hard: Limit| {
        let mut fix = vec![format!(
            "LimitNOFILE={target} in the gateway's systemd unit ([Service])"
        )];
        if hard.allows(target) {
            fix.push(format!("ulimit -n {target}   # this shell"));
        } else {
            fix.push(format!(
                "ulimit -Hn {target} && ulimit -n {target}   # this shell, as root: the hard limit is lower"
            ));
            fix.push(format!(
                "for login sessions: '* hard nofile {target}' and '* soft nofile {target}' in /etc/security/limits.conf"
            ));
        }
        fix
    };
    if !limit.soft.allows(start) {
        Finding::new("nofile", Status::Fail, reading, WHY).fix(fixes(limit.hard))
    } else if !limit.soft.allows(need) {
        Finding::new("nofile", Status::Warn, reading, WHY).fix(fixes(limit.hard))
    } else {
        Finding::new("nofile", Status::Ok, reading, WHY)
    }
}

fn file_max(facts: &HostFacts, plan: &Plan, workers: u64) -> Finding {
    const WHY: &str = "fs.file-max caps open files across the whole host, PostgreSQL's included; \
        at the cap every process's open() and accept() fail.";
    let Some(value) = facts.file_max.as_deref().and_then(parse::number) else {
        return unreadable("file-max", "/proc/sys/fs/file-max", WHY);
    };
    // PostgreSQL holds about as many descriptors per backend again.
    let need = 2 * (descriptors_to_start(workers) + 2 * plan.sessions);
    let reading = format!("fs.file-max = {value}; gateway and backends need ~{need}");
    if value < need {
        Finding::new("file-max", Status::Warn, reading, WHY)
            .fix(sysctl("fs.file-max", &need.next_power_of_two().to_string()))
    } else {
        Finding::new("file-max", Status::Ok, reading, WHY)
    }
}

fn ephemeral_ports(facts: &HostFacts, plan: &Plan) -> Finding {
    const WHY: &str = "Each session opens its own connection to the backend from a local \
        ephemeral port; with one backend address, the range bounds concurrent sessions (and \
        TIME_WAIT after churn holds ports for 60 s).";
    let Some((first, last)) = facts
        .ip_local_port_range
        .as_deref()
        .and_then(parse::port_range)
    else {
        return unreadable(
            "ephemeral-ports",
            "/proc/sys/net/ipv4/ip_local_port_range",
            WHY,
        );
    };
    let ports = u64::from(last - first + 1);
    let reading = format!(
        "net.ipv4.ip_local_port_range = {first}-{last} ({ports} ports) for {} sessions per backend",
        plan.sessions
    );
    if ports < plan.sessions {
        Finding::new("ephemeral-ports", Status::Warn, reading, WHY)
            .fix(sysctl("net.ipv4.ip_local_port_range", "10000 65000"))
    } else {
        Finding::new("ephemeral-ports", Status::Ok, reading, WHY)
    }
}

fn thp(facts: &HostFacts) -> Finding {
    const WHY: &str = "With transparent hugepages set to \"always\", page faults may stall on \
        memory compaction and khugepaged rewrites memory in the background: latency spikes for \
        the gateway and PostgreSQL. \"madvise\" leaves huge pages to programs that ask.";
    let enabled = facts.thp_enabled.as_deref().and_then(parse::bracketed);
    let defrag = facts.thp_defrag.as_deref().and_then(parse::bracketed);
    let Some(enabled) = enabled else {
        return Finding::new(
            "thp",
            Status::Ok,
            "transparent hugepages not available on this kernel".to_owned(),
            WHY,
        );
    };
    let reading = format!(
        "transparent_hugepage/enabled = {enabled}, defrag = {}",
        defrag.unwrap_or("?")
    );
    if enabled == "always" || defrag == Some("always") {
        Finding::new("thp", Status::Warn, reading, WHY).fix([
            "echo madvise > /sys/kernel/mm/transparent_hugepage/enabled".to_owned(),
            "echo defer+madvise > /sys/kernel/mm/transparent_hugepage/defrag".to_owned(),
            "after a reboot: transparent_hugepage=madvise on the kernel command line".to_owned(),
        ])
    } else {
        Finding::new("thp", Status::Ok, reading, WHY)
    }
}

fn governor(facts: &HostFacts) -> Finding {
    const WHY: &str =
        "Governors other than \"performance\" lower the clock when idle and raise it \
        only after load appears: the first statements after a quiet moment run slower.";
    if facts.governors.is_empty() {
        return Finding::new(
            "cpu-governor",
            Status::Ok,
            "no cpufreq interface (usual on VMs: the hypervisor sets the clock)".to_owned(),
            WHY,
        );
    }
    let slow: Vec<String> = facts
        .governors
        .iter()
        .filter(|(_, g)| g != "performance")
        .map(|(cpu, g)| format!("{cpu} {g}"))
        .collect();
    let reading = if slow.is_empty() {
        format!("performance on all {} CPUs", facts.governors.len())
    } else {
        format!(
            "{} of {} CPUs not on performance: {}",
            slow.len(),
            facts.governors.len(),
            slow.join(", ")
        )
    };
    if slow.is_empty() {
        Finding::new("cpu-governor", Status::Ok, reading, WHY)
    } else {
        Finding::new("cpu-governor", Status::Warn, reading, WHY).fix([
            "cpupower frequency-set -g performance".to_owned(),
            "or: echo performance | tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
                .to_owned(),
        ])
    }
}

/// The worst status among `findings` (OK for none).
pub fn worst(findings: &[Finding]) -> Status {
    findings
        .iter()
        .map(|f| f.status)
        .max()
        .unwrap_or(Status::Ok)
}

/// The report as text: one line per item, with why and fix under anything not OK.
pub fn render(findings: &[Finding], plan: &Plan, host: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let workers = match plan.workers {
        0 => "one worker per core".to_owned(),
        n => format!("{n} workers"),
    };
    let ring = if plan.uses_io_uring() {
        format!(
            "io_uring ({} entries{}{})",
            plan.uring_entries,
            if plan.uring_coop_taskrun {
                ", COOP_TASKRUN"
            } else {
                ""
            },
            if plan.uring_sqpoll { ", SQPOLL" } else { "" }
        )
    } else {
        plan.driver.clone()
    };
    let _ = writeln!(
        out,
        "sluice tune check on {host}: {workers}, {ring}, backlog {}, planning for {} sessions",
        plan.backlog, plan.sessions
    );
    let _ = writeln!(out, "(read-only: nothing on this host was changed)\n");
    let width = ITEMS.iter().map(|i| i.len()).max().unwrap_or(0);
    for f in findings {
        let _ = writeln!(
            out,
            "{:<4}  {:<width$}  {}",
            f.status.to_string(),
            f.item,
            f.reading
        );
        if f.status != Status::Ok {
            let indent = " ".repeat(width + 8);
            let _ = writeln!(out, "      {:<width$}  why: {}", "", f.why);
            for fix in &f.fix {
                let _ = writeln!(out, "{indent}fix: {fix}");
            }
        }
    }
    let (warn, fail) = findings.iter().fold((0, 0), |(w, f), x| match x.status {
        Status::Warn => (w + 1, f),
        Status::Fail => (w, f + 1),
        Status::Ok => (w, f),
    });
    let _ = writeln!(
        out,
        "\n{} OK, {warn} WARN, {fail} FAIL{}",
        findings.len() - warn - fail,
        if fail > 0 {
            ": the gateway would not start with this config here"
        } else {
            ""
        }
    );
    out
}

#[cfg(test)]
mod tests;
