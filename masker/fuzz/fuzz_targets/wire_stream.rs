#![no_main]

use std::sync::{Arc, OnceLock};

use sluice_masker::{fuzzing, Masker};

// Compiling the profiles' detectors costs far more than a run: once per process.
static MASKERS: OnceLock<Vec<Arc<Masker>>> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    fuzzing::wire_stream_with(MASKERS.get_or_init(fuzzing::maskers), data)
});
