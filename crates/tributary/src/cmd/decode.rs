//! `tributary decode`: decodes a captured stream (Server-Sent Events, delimited JSON or
//! concatenated JSON) into one compact JSON object per frame on stdout.
//!
//! * SSE: `{"event":..,"data":..,"id":..}` per dispatched event (`id` is the last event id at
//!   dispatch, `""` when none), `{"retry":N}` per valid `retry:` field, and `{"comment":..}`
//!   per comment line with `--comments`.
//! * JSON formats: each frame's JSON value, compacted (whitespace outside strings removed; key
//!   order, numbers and escapes kept as sent).
//!
//! Malformed and oversize frames are reported on stderr with their byte offset and skipped.
//! Exit status: 0 when every frame was good, 1 when any was skipped, 2 for usage or IO errors.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use serde::Serialize;
use stream_frame::{
    Decode, Delimiter, Frame, Item, JsonLinesDecoder, JsonSeqDecoder, Limits, SseDecoder, SseItem,
};

/// Size of each read from the input: the stream is decoded as it arrives, never held whole.
const CHUNK: usize = 64 * 1024;

/// The framing of the captured stream.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Server-Sent Events (`text/event-stream`).
    Sse,
    /// One JSON text per frame, frames split on `\r`, `\n` or `\r\n`.
    JsonLines,
    /// JSON objects and arrays back to back or separated by whitespace.
    JsonSeq,
}

/// Arguments of `tributary decode`.
#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    /// Framing of the input.
    #[arg(long, value_enum)]
    pub format: Format,
    /// Also print SSE comment lines (keep-alives) as {"comment":..}.
    #[arg(long)]
    pub comments: bool,
    /// Largest frame accepted, in bytes; larger ones are reported and skipped.
    #[arg(long, value_name = "BYTES", default_value_t = Limits::DEFAULT_MAX_FRAME as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_frame: u64,
    /// Captured stream to decode; standard input when absent.
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Runs `tributary decode`: 0 when every frame was good, 1 when any was skipped, 2 on IO errors.
pub fn run(args: &DecodeArgs) -> ExitCode {
    let (input, name): (Box<dyn Read>, String) = match &args.file {
        Some(path) => match File::open(path) {
            Ok(f) => (Box::new(f), path.display().to_string()),
            Err(e) => {
                eprintln!("tributary decode: cannot open {}: {e}", path.display());
                return ExitCode::from(2);
            }
        },
        None => (Box::new(io::stdin().lock()), "<stdin>".to_string()),
    };
    let stdout = io::stdout().lock();
    let mut out = BufWriter::with_capacity(CHUNK, stdout);
    let mut err = io::stderr().lock();
    match decode_stream(args, input, &mut out, &mut err, &name) {
        Ok(Outcome::AllGood) => ExitCode::SUCCESS,
        Ok(Outcome::Skipped) => ExitCode::from(1),
        Err(Failure::OutputClosed(outcome)) => match outcome {
            Outcome::AllGood => ExitCode::SUCCESS,
            Outcome::Skipped => ExitCode::from(1),
        },
        Err(Failure::Io(msg)) => {
            let _ = writeln!(err, "tributary decode: {msg}");
            ExitCode::from(2)
        }
    }
}

/// How a decode run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// Every frame was good.
    AllGood,
    /// At least one frame was malformed or oversize and skipped.
    Skipped,
}

/// Why a decode run stopped early.
#[derive(Debug)]
enum Failure {
    /// The reader of stdout went away (e.g. `| head`): stop quietly.
    OutputClosed(Outcome),
    /// Reading the input or writing the output failed.
    Io(String),
}

/// Decodes `input` per `args`, writing frames to `out` and problems to `err`.
fn decode_stream(
    args: &DecodeArgs,
    mut input: impl Read,
    out: &mut impl Write,
    err: &mut impl Write,
    name: &str,
) -> Result<Outcome, Failure> {
    let limits = Limits::with_max_frame(usize::try_from(args.max_frame).unwrap_or(usize::MAX));
    let mut sink = Sink {
        out,
        err,
        name,
        comments: args.comments,
        skipped: false,
        scratch: Vec::new(),
    };
    match args.format {
        Format::Sse => pump(SseDecoder::new(limits), &mut input, &mut sink, |s, i| {
            s.sse(i)
        })?,
        Format::JsonLines => pump(
            JsonLinesDecoder::new(Delimiter::Any, limits),
            &mut input,
            &mut sink,
            |s, i| s.json(i),
        )?,
        Format::JsonSeq => pump(
            JsonSeqDecoder::new(limits),
            &mut input,
            &mut sink,
            |s, i| s.json(i),
        )?,
    }
    sink.out.flush().map_err(|e| sink.write_failure(e))?;
    Ok(sink.outcome())
}

/// Feeds all of `input` through `decoder`, handing what it completed to `emit` after each read.
fn pump<'s, D: Decode, O: Write, E: Write>(
    mut decoder: D,
    input: &mut impl Read,
    sink: &mut Sink<'s, O, E>,
    mut emit: impl FnMut(&mut Sink<'s, O, E>, &mut Vec<Item<D::Output>>) -> Result<(), Failure>,
) -> Result<(), Failure> {
    let mut buf = vec![0u8; CHUNK];
    let mut items = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Failure::Io(format!("cannot read {}: {e}", sink.name))),
        };
        decoder.feed_chunk(buf[..n].into(), &mut items);
        emit(sink, &mut items)?;
    }
    decoder.finish_stream(&mut items);
    emit(sink, &mut items)
}

/// Where decoded items go: frames to `out`, problems to `err`.
struct Sink<'a, O: Write, E: Write> {
    out: &'a mut O,
    err: &'a mut E,
    name: &'a str,
    comments: bool,
    skipped: bool,
    scratch: Vec<u8>,
}

#[derive(Serialize)]
struct EventOut<'a> {
    event: &'a str,
    data: &'a str,
    id: &'a str,
}

#[derive(Serialize)]
struct RetryOut {
    retry: u64,
}

#[derive(Serialize)]
struct CommentOut<'a> {
    comment: &'a str,
}

impl<O: Write, E: Write> Sink<'_, O, E> {
    fn outcome(&self) -> Outcome {
        if self.skipped {
            Outcome::Skipped
        } else {
            Outcome::AllGood
        }
    }

    fn write_failure(&self, e: io::Error) -> Failure {
        if e.kind() == io::ErrorKind::BrokenPipe {
            Failure::OutputClosed(self.outcome())
        } else {
            Failure::Io(format!("cannot write the output: {e}"))
        }
    }

    fn line(&mut self, value: &impl Serialize) -> Result<(), Failure> {
        serde_json::to_writer(&mut *self.out, value)
            .map_err(io::Error::from)
            .and_then(|()| self.out.write_all(b"\n"))
            .map_err(|e| self.write_failure(e))
    }

    fn problem(&mut self, msg: std::fmt::Arguments<'_>) {
        self.skipped = true;
        // Diagnostics are best effort: a closed stderr must not stop the decoding.
        let _ = writeln!(self.err, "tributary decode: {}: {msg}", self.name);
    }

    fn sse(&mut self, items: &mut Vec<Item<SseItem>>) -> Result<(), Failure> {
        for item in items.drain(..) {
            match item {
                Item::Frame(SseItem::Event(ev)) => self.line(&EventOut {
                    event: &ev.event,
                    data: &ev.data,
                    id: &ev.id,
                })?,
                Item::Frame(SseItem::Retry(ms)) => self.line(&RetryOut { retry: ms })?,
                Item::Frame(SseItem::Comment(c)) if self.comments => {
                    self.line(&CommentOut { comment: &c })?
                }
                Item::Frame(SseItem::Comment(_)) | Item::KeepAlive => {}
                Item::Error(e) => self.problem(format_args!("{e}")),
                // `Item` may grow; anything else is not a frame to print.
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        Ok(())
    }

    fn json(&mut self, items: &mut Vec<Item<Frame>>) -> Result<(), Failure> {
        for item in items.drain(..) {
            match item {
                Item::Frame(f) => match serde_json::from_slice::<serde::de::IgnoredAny>(&f.bytes) {
                    Ok(_) => {
                        self.scratch.clear();
                        compact_json(&f.bytes, &mut self.scratch);
                        self.scratch.push(b'\n');
                        let r = self.out.write_all(&self.scratch);
                        r.map_err(|e| self.write_failure(e))?;
                    }
                    Err(e) => self.problem(format_args!(
                        "malformed frame: not valid JSON ({e}), skipped (at byte offset {})",
                        f.offset
                    )),
                },
                Item::KeepAlive => {}
                Item::Error(e) => self.problem(format_args!("{e}")),
                #[allow(unreachable_patterns)]
                _ => {}
            }
        }
        Ok(())
    }
}

/// Copies valid JSON text `src` to `dst` without the whitespace outside strings.
fn compact_json(src: &[u8], dst: &mut Vec<u8>) {
    let mut in_string = false;
    let mut escape = false;
    for &b in src {
        if in_string {
            dst.push(b);
            if escape {
                escape = false;
            } else if b == b'\\' {
                escape = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
            if b == b'"' {
                in_string = true;
            }
            dst.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(format: Format) -> DecodeArgs {
        DecodeArgs {
            format,
            comments: false,
            max_frame: Limits::DEFAULT_MAX_FRAME as u64,
            file: None,
        }
    }

    fn decode(args: &DecodeArgs, input: &[u8]) -> (Outcome, String, String) {
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let outcome = decode_stream(args, input, &mut out, &mut err, "in.txt").expect("decodes");
        (
            outcome,
            String::from_utf8(out).unwrap(),
            String::from_utf8(err).unwrap(),
        )
    }

    #[test]
    fn sse_events_retry_and_comments() {
        let input =
            b": hi\nretry: 1500\nid: 7\nevent: message-edit\ndata: {\"a\":1}\n\ndata: x\n\n";
        let (outcome, out, err) = decode(&args(Format::Sse), input);
        assert_eq!(outcome, Outcome::AllGood);
        assert_eq!(err, "");
        assert_eq!(
            out,
            "{\"retry\":1500}\n\
             {\"event\":\"message-edit\",\"data\":\"{\\\"a\\\":1}\",\"id\":\"7\"}\n\
             {\"event\":\"message\",\"data\":\"x\",\"id\":\"7\"}\n"
        );
        let mut with_comments = args(Format::Sse);
        with_comments.comments = true;
        let (_, out, _) = decode(&with_comments, input);
        assert!(
            out.starts_with("{\"comment\":\"hi\"}\n{\"retry\":1500}\n"),
            "{out}"
        );
    }

    #[test]
    fn json_frames_are_compacted_in_order_and_bad_ones_reported() {
        let input = b"{ \"b\" : 1,\t\"a\" : \"x y\" }\r\nnot json\r\n[1, 2.50]\r\n";
        let (outcome, out, err) = decode(&args(Format::JsonLines), input);
        assert_eq!(outcome, Outcome::Skipped);
        assert_eq!(out, "{\"b\":1,\"a\":\"x y\"}\n[1,2.50]\n");
        assert!(
            err.contains("in.txt") && err.contains("byte offset 26"),
            "{err}"
        );
    }

    #[test]
    fn json_seq_and_max_frame() {
        let mut a = args(Format::JsonSeq);
        a.max_frame = 10;
        let (outcome, out, err) = decode(&a, b"{\"a\":1}\n{\"long\":\"xxxxxxxx\"} [3]");
        assert_eq!(outcome, Outcome::Skipped);
        assert_eq!(out, "{\"a\":1}\n[3]\n");
        assert!(
            err.contains("10-byte limit") && err.contains("byte offset 8"),
            "{err}"
        );
    }

    #[test]
    fn compact_keeps_escapes_and_spaces_in_strings() {
        let mut dst = Vec::new();
        compact_json(br#"{ "k" : "a \" b\\" , "n" : [ 1 , 2 ] }"#, &mut dst);
        assert_eq!(dst, br#"{"k":"a \" b\\","n":[1,2]}"#);
    }

    /// A writer that fails like a closed pipe.
    struct ClosedPipe;
    impl Write for ClosedPipe {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Err(io::ErrorKind::BrokenPipe.into())
        }
    }

    #[test]
    fn closed_output_stops_quietly() {
        let mut err = Vec::new();
        let r = decode_stream(
            &args(Format::JsonSeq),
            &b"[1][2]"[..],
            &mut ClosedPipe,
            &mut err,
            "x",
        );
        assert!(
            matches!(r, Err(Failure::OutputClosed(Outcome::AllGood))),
            "{r:?}"
        );
        assert!(err.is_empty());
    }
}
