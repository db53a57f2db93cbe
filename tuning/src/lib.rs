//! # sluice-tuning — not built yet
//!
//! Will own named configuration profiles (latency, throughput, small host) and host checks
//! (CPU placement, io_uring availability, file-descriptor and socket limits) that operators
//! run before deploying Sluice.
//!
//! It must never change the host by itself: it reports and proposes, the operator applies.
