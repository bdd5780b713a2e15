//! Process test: `tributary emulate flowdock --delim cr|crlf` ends its JSON stream frames as
//! asked (`\r`, the document's rule, or `\r\n`, what the document's Ruby example and the npm
//! `flowdock` client split on), and our client reads both.

use std::process::Stdio;
use std::time::Duration;

use chat_model::{Secret, SourceItem};
use flowdock::{Client, ClientConfig, Transport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;

const WAIT: Duration = Duration::from_secs(15);

/// Starts `tributary emulate flowdock --delim <delim>` on a free port; returns the child
/// (killed on drop) and its address once it accepts connections.
async fn emulate(delim: &str) -> (tokio::process::Child, String) {
    let addr = format!("127.0.0.1:{}", common::free_port());
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["emulate", "flowdock", "--listen", &addr, "--rate", "40"])
        .args(["--seed", "5", "--delim", delim])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("tributary emulate starts");
    let up = tokio::time::timeout(WAIT, async {
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(up.is_ok(), "the emulator never listened on {addr}");
    (child, addr)
}

/// The raw JSON stream body (HTTP/1.0, so not chunked) until it holds `frames` frame ends.
async fn raw_body(addr: &str, frames: usize) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(
        b"GET /flows?filter=acme/main,acme/ops&access_token=flowdock-token HTTP/1.0\r\n\
          Accept: application/json\r\n\r\n",
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = tokio::time::timeout(WAIT, async {
        loop {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some((_, body)) = text.split_once("\r\n\r\n") {
                if body.matches("}\r").count() >= frames {
                    return;
                }
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "too few frames: {}",
        String::from_utf8_lossy(&buf)
    );
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.0 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/json"),
        "{head}"
    );
    body.to_owned()
}

/// The byte after each frame end (`}` then `\r`) that has one.
fn after_frame_ends(body: &str) -> Vec<u8> {
    body.match_indices("}\r")
        .filter_map(|(i, _)| body.as_bytes().get(i + 2).copied())
        .collect()
}

/// Our client reads `n` events from the emulator at `addr` on the JSON stream, none malformed.
async fn client_reads(addr: &str, n: usize) {
    let mut cfg = ClientConfig::new(
        "fd",
        Secret::new("flowdock-token"),
        vec!["acme/main".into(), "acme/ops".into()],
    );
    cfg.settings.url = format!("http://{addr}");
    cfg.settings.transport = Transport::Json;
    let mut stream = Client::new(cfg).unwrap().connect(None).await.unwrap();
    let mut ids = Vec::new();
    let r = tokio::time::timeout(WAIT, async {
        while ids.len() < n {
            match stream.next_item().await.expect("stream item") {
                SourceItem::Event { event, .. } => {
                    assert!(event.room.starts_with("acme/"), "{event:?}");
                    ids.push(event.id);
                }
                SourceItem::Malformed { error } => panic!("malformed frame: {error}"),
                _ => {}
            }
        }
    })
    .await;
    assert!(r.is_ok(), "only {} events", ids.len());
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "{ids:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulate_flowdock_delim_crlf_and_cr_are_read_by_our_client() {
    let (mut crlf, addr) = emulate("crlf").await;
    let body = raw_body(&addr, 6).await;
    let after = after_frame_ends(&body);
    assert!(
        after.len() >= 5 && after.iter().all(|b| *b == b'\n'),
        "every frame ends with \\r\\n: {body:?}"
    );
    let complete = &body[..body.rfind("}\r\n").unwrap() + 3];
    for frame in complete.split("\r\n").filter(|f| !f.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(frame.trim_start_matches('\n'))
            .unwrap_or_else(|e| panic!("a frame split on \\r\\n is one object ({e}): {frame:?}"));
        assert!(v["event"].is_string(), "{v}");
    }
    client_reads(&addr, 10).await;
    crlf.kill().await.unwrap();

    let (mut cr, addr) = emulate("cr").await;
    let body = raw_body(&addr, 6).await;
    let after = after_frame_ends(&body);
    assert!(
        after.len() >= 5 && after.iter().all(|b| *b == b'{'),
        "frames end with a lone \\r: {body:?}"
    );
    client_reads(&addr, 10).await;
    cr.kill().await.unwrap();
}
