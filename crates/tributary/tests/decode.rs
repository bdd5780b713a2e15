//! Black-box tests of `tributary decode`: every format, exit codes, limits, stdin, comments.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn tributary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tributary"))
}

/// Runs `tributary decode ARGS` with `stdin` as input.
fn decode_stdin(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = tributary()
        .arg("decode")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tributary starts");
    let mut pipe = child.stdin.take().expect("stdin");
    // Feed stdin from another thread so a large input cannot deadlock against a full stdout.
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = pipe.write_all(&input);
    });
    let out = child.wait_with_output().expect("tributary ends");
    writer.join().expect("stdin writer");
    out
}

/// Runs `tributary decode ARGS FILE` with `content` in a temporary file.
fn decode_file(args: &[&str], content: &[u8]) -> Output {
    let mut file = tempfile::NamedTempFile::new().expect("temp file");
    file.write_all(content).expect("write temp file");
    let out = tributary()
        .arg("decode")
        .args(args)
        .arg(file.path())
        .output()
        .expect("tributary runs");
    drop(file);
    out
}

fn stdout(o: &Output) -> String {
    String::from_utf8(o.stdout.clone()).expect("utf-8 stdout")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn sse_from_a_file() {
    let input =
        b"\xEF\xBB\xBFretry: 2500\r\nid: 1\r\ndata: {\"event\":\"message\"}\r\n\r\n: ping\n\
                  event: edit\ndata: a\ndata: b\n\nid: 2\0\ndata: c\n\ndata: unterminated";
    let o = decode_file(&["--format", "sse"], input);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        stdout(&o),
        "{\"retry\":2500}\n\
         {\"event\":\"message\",\"data\":\"{\\\"event\\\":\\\"message\\\"}\",\"id\":\"1\"}\n\
         {\"event\":\"edit\",\"data\":\"a\\nb\",\"id\":\"1\"}\n\
         {\"event\":\"message\",\"data\":\"c\",\"id\":\"1\"}\n"
    );
    assert_eq!(stderr(&o), "");
}

#[test]
fn sse_comments_only_with_the_flag() {
    let input = b": keep-alive\ndata: x\n\n";
    let o = decode_stdin(&["--format", "sse"], input);
    assert_eq!(
        stdout(&o),
        "{\"event\":\"message\",\"data\":\"x\",\"id\":\"\"}\n"
    );
    let o = decode_stdin(&["--format", "sse", "--comments"], input);
    assert_eq!(
        stdout(&o),
        "{\"comment\":\"keep-alive\"}\n{\"event\":\"message\",\"data\":\"x\",\"id\":\"\"}\n"
    );
    assert_eq!(o.status.code(), Some(0));
}

#[test]
fn json_lines_from_stdin_with_keep_alives_and_a_malformed_frame() {
    let input = b"{ \"id\" : 1 }\r \r{\"id\":2, \"t\":\"a b\"}\r\n\n{oops}\r[3]";
    let o = decode_stdin(&["--format", "json-lines"], input);
    assert_eq!(
        o.status.code(),
        Some(1),
        "a skipped frame gives exit status 1"
    );
    assert_eq!(
        stdout(&o),
        "{\"id\":1}\n{\"id\":2,\"t\":\"a b\"}\n[3]\n",
        "{}",
        stderr(&o)
    );
    let err = stderr(&o);
    assert!(
        err.contains("<stdin>") && err.contains("not valid JSON"),
        "{err}"
    );
}

#[test]
fn json_lines_all_good_exits_zero() {
    let o = decode_stdin(
        &["--format", "json-lines"],
        b"{\"a\": [1, 2]}\n\n\"text\"\n",
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"a\":[1,2]}\n\"text\"\n");
}

#[test]
fn json_seq_values_spanning_lines() {
    let input = b"{\n  \"a\": \"}{\",\n  \"b\": [1, 2]\n}{\"c\":null}\r\n[ ]";
    let o = decode_file(&["--format", "json-seq"], input);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "{\"a\":\"}{\",\"b\":[1,2]}\n{\"c\":null}\n[]\n");
}

#[test]
fn json_seq_junk_is_reported_with_its_offset() {
    let o = decode_file(&["--format", "json-seq"], b"[1] 42 [2]");
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "[1]\n[2]\n");
    assert!(stderr(&o).contains("byte offset 4"), "{}", stderr(&o));
}

#[test]
fn max_frame_refuses_larger_frames() {
    let input = b"[1]\n[1,2,3,4,5,6,7,8,9]\n[2]\n";
    let o = decode_stdin(&["--format", "json-lines", "--max-frame", "8"], input);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "[1]\n[2]\n");
    let err = stderr(&o);
    assert!(
        err.contains("8-byte limit") && err.contains("byte offset 4"),
        "{err}"
    );

    let o = decode_stdin(
        &["--format", "sse", "--max-frame", "10"],
        b"data: 0123456789\n\ndata: ok\n\n",
    );
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stdout(&o),
        "{\"event\":\"message\",\"data\":\"ok\",\"id\":\"\"}\n"
    );
    assert!(stderr(&o).contains("byte offset 0"), "{}", stderr(&o));
}

#[test]
fn missing_file_is_an_io_error_naming_the_file() {
    let o = tributary()
        .args(["decode", "--format", "sse", "/nonexistent/capture.sse"])
        .output()
        .expect("tributary runs");
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("/nonexistent/capture.sse"),
        "{}",
        stderr(&o)
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn usage_errors_exit_two() {
    for args in [
        &["decode", "--format", "xml"][..],
        &["decode"][..],
        &["decode", "--format", "sse", "--max-frame", "0"][..],
        &["decode", "--format", "sse", "--max-frame", "lots"][..],
    ] {
        let o = tributary().args(args).output().expect("tributary runs");
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
    }
}

#[test]
fn large_input_streams_through_in_chunks() {
    // 3 MiB of events crosses many 64 KiB reads; every event comes out once, in order.
    let mut input = Vec::new();
    for i in 0..20_000 {
        input.extend_from_slice(
            format!(
                "id: {i}\ndata: {{\"n\":{i},\"pad\":\"{}\"}}\n\n",
                "x".repeat(120)
            )
            .as_bytes(),
        );
    }
    let o = decode_stdin(&["--format", "sse"], &input);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 20_000);
    assert!(
        lines[12_345].ends_with("\"id\":\"12345\"}"),
        "{}",
        lines[12_345]
    );
}
