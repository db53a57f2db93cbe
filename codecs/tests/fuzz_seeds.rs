//! The committed fuzz seed corpus must stay valid: every seed is a stream of
//! well-formed frames that decodes completely, and the fuzz bodies pass on it.
//! A seed that stopped decoding would silently make the fuzzer start from
//! nothing.

use std::path::Path;

use bytes::BytesMut;
use sluice_codecs::{backend, frontend, fuzzing, startup, Decode, Limits};

fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| {
            let data = std::fs::read(e.path()).expect("readable seed");
            (e.file_name().to_string_lossy().into_owned(), data)
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no seeds in {}", dir.display());
    out
}

fn decodes_completely<T>(
    name: &str,
    data: &[u8],
    decode: fn(&mut BytesMut, &Limits) -> Result<Decode<T>, sluice_codecs::DecodeError>,
) {
    let mut buf = BytesMut::from(data);
    let mut frames = 0;
    loop {
        match decode(&mut buf, &Limits::default()) {
            Ok(Decode::Frame(_)) => frames += 1,
            Ok(Decode::NeedMore(_)) if buf.is_empty() => break,
            other => panic!("seed {name}: {:?} after {frames} frames", other.err()),
        }
    }
    assert!(frames > 0, "seed {name} holds no frame");
}

#[test]
fn frontend_seeds() {
    for (name, data) in seeds("frontend") {
        decodes_completely(&name, &data, frontend::decode);
        fuzzing::frontend_stream(&data);
    }
}

#[test]
fn backend_seeds() {
    for (name, data) in seeds("backend") {
        decodes_completely(&name, &data, backend::decode);
        fuzzing::backend_stream(&data);
    }
}

#[test]
fn startup_seeds() {
    for (name, data) in seeds("startup") {
        decodes_completely(&name, &data, startup::decode);
        fuzzing::startup(&data);
    }
}
