//! The per-thread runtime: monoio on epoll (the default) or on io_uring (with the ring
//! flags design.md §7 measured), falling back to epoll when the kernel refuses io_uring.
//!
//! Why epoll by default: a closed-loop client does one write and one read per transaction
//! and has nothing to batch them with. monoio's epoll driver tries the `send` and `recv`
//! directly and only parks when a read would block; on io_uring every write is a
//! submission whose completion takes another pass through the runtime. Measured on the
//! 2-core machine of README's tables in quick A/B runs (select-only simple, 8 connections,
//! 2 threads, 5 s, interleaved): epoll 17–24 µs of loadtest CPU per transaction against
//! 24–28 µs on io_uring, and more TPS.

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

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Driver {
    #[default]
    Epoll,
    IoUring,
}

thread_local! {
    /// Set per load thread (and for set-up connections) from --driver.
    static DRIVER: std::cell::Cell<Driver> = const { std::cell::Cell::new(Driver::Epoll) };
}

/// Chooses the driver for runtimes built on this thread.
pub fn set_driver(driver: Driver) {
    DRIVER.with(|d| d.set(driver));
}

/// Runs `fut` to completion on a fresh single-threaded runtime on this thread.
pub fn block_on<T, F: Future<Output = Result<T>>>(fut: F) -> Result<T> {
    if DRIVER.with(|d| d.get()) == Driver::IoUring {
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

/// Which driver [`block_on`] uses for `driver` on this kernel, for the report.
pub fn driver_name(driver: Driver) -> &'static str {
    if driver == Driver::IoUring && io_uring::IoUring::new(8).is_ok() {
        "io_uring"
    } else {
        "epoll"
    }
}
