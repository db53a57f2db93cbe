//! # sluice-loadtest — not built yet
//!
//! Will own `sluice loadtest`: a native PostgreSQL load generator on its own thread-per-core
//! runtime (pgbench-compatible workloads, open- and closed-loop load, several targets
//! interleaved in one run, hdrhistogram latencies, CPU per transaction from /proc).
//!
//! Until it lands, the side-by-side figures in README.md are produced with pgbench by
//! `bench/pgbench-compare.sh`. It must never be the bottleneck of what it measures.
