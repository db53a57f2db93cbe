//! # sluice-masker — not built yet
//!
//! Will own the redaction of sensitive values in what the database returns, applied to
//! streaming buffers without ever holding a whole result set: column rules (by name glob,
//! `table.column`, type OID) compiled into a masking plan once per `RowDescription`, and
//! content detectors (cards with Luhn, emails, national IDs, IBANs, secrets, user lists)
//! whose cheap SIMD prefilter (`memchr`, `aho-corasick`) finds candidates and a validator
//! decides.
//!
//! It must never do I/O, read a clock, or let an unmasked value of a named column through.
//! Nothing is implemented here yet (see the masking issue); the crate exists so the
//! workspace has the shape of the design.
