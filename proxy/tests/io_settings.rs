//! The `[io]` section against a real PostgreSQL: a gateway whose workers run SQPOLL rings
//! (with a custom backlog and without COOP_TASKRUN) serves sessions, and where the kernel
//! grants SQPOLL, its polling threads really exist.

mod common;

use common::{guard, Fixture};

/// Names of this process's threads (`/proc/self/task/*/comm`); SQPOLL threads appear as
/// `iou-sqp-PID`.
fn thread_names() -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_with_sqpoll_rings_serve_sessions() {
    let sqpoll_before = thread_names()
        .iter()
        .filter(|n| n.starts_with("iou-sqp"))
        .count();
    let fx = Fixture::with_config(|config| {
        config.io.uring_sqpoll = true;
        config.io.uring_sqpoll_idle_ms = 5;
        config.io.uring_coop_taskrun = false;
        config.io.backlog = 64;
        config
            .validate()
            .expect("an [io] section the gateway accepts");
    });
    let client = fx.client("alice").await;
    for i in 0..20 {
        let row = guard(
            "query over an SQPOLL ring",
            client.query_one("SELECT $1::int + 1", &[&i]),
        )
        .await
        .expect("query");
        assert_eq!(row.get::<_, i32>(0), i + 1);
    }
    // Both workers got a polling thread, unless this kernel refuses SQPOLL (then the
    // workers logged a warning and run without it, as the queries above show).
    let mut probe: io_uring::Builder = io_uring::IoUring::builder();
    let kernel_grants_sqpoll = probe.setup_sqpoll(5).build(8).is_ok();
    let sqpoll_now = thread_names()
        .iter()
        .filter(|n| n.starts_with("iou-sqp"))
        .count();
    if kernel_grants_sqpoll {
        assert!(
            sqpoll_now >= sqpoll_before + 2,
            "two workers, two SQPOLL threads: {:?}",
            thread_names()
        );
    }
}
