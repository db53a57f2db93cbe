#![no_main]

//! Arbitrary bytes as a segment file: opening, the footer, every block, the archive's
//! index and `verify` must return errors or reported problems, never panic.

use std::path::PathBuf;
use std::sync::OnceLock;

use sluice_recorder::{verify, Archive, SegmentReader, SessionFilter};

// One scratch directory per fuzzing process; the file is overwritten for each input.
static DIR: OnceLock<PathBuf> = OnceLock::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("sluice-recorder-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    });
    let path = dir.join("w000-0000000000.seg");
    std::fs::write(&path, data).expect("write input");
    if let Ok(reader) = SegmentReader::open(&path) {
        let _ = reader.read_footer();
        for block in reader.blocks() {
            if let Ok(block) = block {
                let _ = block.records.len();
            }
        }
        let _ = reader.scan_index();
    }
    if let Ok(archive) = Archive::open(dir) {
        for session in archive.sessions(&SessionFilter::default()) {
            let _ = archive.records(session.session);
        }
        let _ = archive.search(&Default::default());
    }
    let _ = verify(dir, None);
});
