//! The only part of `tune check` that touches the host: it reads files under `/proc` and
//! `/sys` and asks the kernel for io_uring rings, which it drops at once. It writes
//! nothing anywhere.

use std::path::Path;

use super::{HostFacts, Plan, UringProbe};

fn read(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

impl HostFacts {
    /// Reads this host, and this process's limits, for `plan`.
    pub fn read(plan: &Plan) -> HostFacts {
        let mut governors = Vec::new();
        if let Ok(entries) = std::fs::read_dir("/sys/devices/system/cpu") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let is_cpu = name
                    .strip_prefix("cpu")
                    .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
                if !is_cpu {
                    continue;
                }
                if let Some(governor) = read(entry.path().join("cpufreq/scaling_governor")) {
                    governors.push((name, governor.trim().to_owned()));
                }
            }
        }
        governors.sort_by_key(|(cpu, _)| cpu[3..].parse::<u32>().unwrap_or(u32::MAX));
        HostFacts {
            kernel_release: read("/proc/sys/kernel/osrelease"),
            cpus_online: read("/sys/devices/system/cpu/online"),
            self_status: read("/proc/self/status"),
            self_limits: read("/proc/self/limits"),
            somaxconn: read("/proc/sys/net/core/somaxconn"),
            file_max: read("/proc/sys/fs/file-max"),
            thp_enabled: read("/sys/kernel/mm/transparent_hugepage/enabled"),
            thp_defrag: read("/sys/kernel/mm/transparent_hugepage/defrag"),
            governors,
            io_uring_disabled: read("/proc/sys/kernel/io_uring_disabled"),
            ip_local_port_range: read("/proc/sys/net/ipv4/ip_local_port_range"),
            uring: probe(plan.uring_entries, plan.uring_sqpoll_idle_ms),
        }
    }
}

/// Sets up (and drops) a ring per flag set, the way the gateway's workers will.
fn probe(entries: u32, sqpoll_idle_ms: u32) -> UringProbe {
    let try_build =
        |builder: &io_uring::Builder| builder.build(entries).map(drop).map_err(|e| e.to_string());
    UringProbe {
        plain: try_build(&io_uring::IoUring::builder()),
        coop_taskrun: try_build(
            io_uring::IoUring::builder()
                .setup_coop_taskrun()
                .setup_taskrun_flag(),
        ),
        sqpoll: try_build(io_uring::IoUring::builder().setup_sqpoll(sqpoll_idle_ms.max(1))),
    }
}
