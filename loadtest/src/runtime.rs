//! The per-thread runtime: monoio on io_uring (with the ring flags design.md §7 measured),
//! falling back to epoll when the kernel refuses io_uring or when
//! `SLUICE_LOADTEST_DRIVER=epoll` asks for it.

use std::future::Future;

use anyhow::{Context, Result};
use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};

const RING_ENTRIES: u32 = 1024;

fn uring_builder(with_flags: bool) -> io_uring::Builder {
    let mut builder = io_uring::IoUring::builder();
    if with_flags {
        builder.setup_coop_taskrun().setup_taskrun_flag();
    }
    builder
}

/// Runs `fut` to completion on a fresh single-threaded runtime on this thread.
pub fn block_on<T, F: Future<Output = Result<T>>>(fut: F) -> Result<T> {
    let want_epoll = std::env::var("SLUICE_LOADTEST_DRIVER").is_ok_and(|d| d == "epoll");
    if !want_epoll {
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(RING_ENTRIES)
            .uring_builder(uring_builder(true))
            .enable_timer()
            .build()
            .or_else(|_| {
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(RING_ENTRIES)
                    .uring_builder(uring_builder(false))
                    .enable_timer()
                    .build()
            });
        if let Ok(mut rt) = built {
            return rt.block_on(fut);
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .enable_timer()
        .build()
        .context("building the epoll runtime")?;
    rt.block_on(fut)
}

/// Which driver [`block_on`] would use here, for the report.
pub fn driver_name() -> &'static str {
    let want_epoll = std::env::var("SLUICE_LOADTEST_DRIVER").is_ok_and(|d| d == "epoll");
    if !want_epoll && io_uring::IoUring::new(8).is_ok() {
        "io_uring"
    } else {
        "epoll"
    }
}
