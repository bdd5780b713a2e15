//! Replays the fuzz seed corpus (and any crash inputs saved there) on stable, with the same
//! checks the fuzz targets run (`stream_frame::check`).

use std::path::PathBuf;

fn replay(target: &str, check: fn(&[u8])) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target);
    let entries = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot read the corpus {}: {e}", dir.display()));
    let mut count = 0;
    for entry in entries {
        let path = entry.expect("corpus entry").path();
        if !path.is_file() {
            continue;
        }
        let data = std::fs::read(&path).expect("corpus file");
        let result = std::panic::catch_unwind(|| check(&data));
        assert!(
            result.is_ok(),
            "corpus input {} failed its checks",
            path.display()
        );
        count += 1;
    }
    assert!(count > 0, "no corpus files in {}", dir.display());
}

#[test]
fn sse_corpus() {
    replay("sse", stream_frame::check::check_sse);
}

#[test]
fn json_lines_corpus() {
    replay("json_lines", stream_frame::check::check_lines);
}

#[test]
fn json_seq_corpus() {
    replay("json_seq", stream_frame::check::check_seq);
}
