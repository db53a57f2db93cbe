#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| sluice_classify::lexer::fuzzing::lexer_vs_pg_query(data));
