//! Writing events: NDJSON (the chat-model schema) or a readable, coloured line per event.

use std::io::{self, Write};

use anstyle::{AnsiColor, Color, Style};
use chat_model::{ConnectionState, Event, Kind, Service};

/// How events are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// One JSON object per line (the chat-model schema, version 1).
    Json,
    /// One readable, coloured line per event.
    Pretty,
}

impl Format {
    /// `json` when stdout is not a terminal, `pretty` when it is.
    pub fn default_for_stdout() -> Format {
        if io::IsTerminal::is_terminal(&io::stdout()) {
            Format::Pretty
        } else {
            Format::Json
        }
    }
}

/// Prints events to a writer in one format.
pub struct Printer<W: Write> {
    out: W,
    format: Format,
    raw: bool,
}

impl<W: Write> Printer<W> {
    /// A printer; `raw` keeps each event's wire object in JSON output.
    pub fn new(out: W, format: Format, raw: bool) -> Self {
        Printer { out, format, raw }
    }

    /// Writes one event (one line); its `raw` is left out unless asked for (and put back).
    pub fn print(&mut self, event: &mut Event) -> io::Result<()> {
        match self.format {
            Format::Json => {
                let raw = if self.raw { None } else { event.raw.take() };
                let written = serde_json::to_writer(&mut self.out, &*event);
                event.raw = event.raw.take().or(raw);
                written?;
                self.out.write_all(b"\n")
            }
            Format::Pretty => {
                let line = pretty_line(event);
                self.out.write_all(line.as_bytes())?;
                self.out.write_all(b"\n")
            }
        }
    }

    /// The writer (for a printer into memory: what was printed so far).
    pub fn buffer(&mut self) -> &mut W {
        &mut self.out
    }
}

fn service_color(service: &Service) -> AnsiColor {
    match service {
        Service::Campfire => AnsiColor::Red,
        Service::Flowdock => AnsiColor::Green,
        Service::Multistreamer => AnsiColor::Magenta,
        Service::Ustream => AnsiColor::Blue,
        Service::Streamin => AnsiColor::Cyan,
        _ => AnsiColor::Yellow,
    }
}

fn paint(style: Style, text: &str) -> String {
    format!("{}{text}{}", style.render(), style.render_reset())
}

/// One readable line: local time, service-coloured source tag, marker, author, text.
///
/// The colour codes are stripped by `anstream` when stdout is not a terminal or `NO_COLOR`
/// is set.
pub fn pretty_line(e: &Event) -> String {
    let time = e.at.with_timezone(&chrono::Local).format("%H:%M:%S");
    let tag_style = Style::new()
        .fg_color(Some(Color::Ansi(service_color(&e.service))))
        .bold();
    let dim = Style::new().dimmed();
    let tag = paint(tag_style, &format!("[{}]", e.source));
    let author = e
        .author
        .name
        .clone()
        .or_else(|| e.author.id.clone())
        .unwrap_or_default();
    let room = if e.room.is_empty() {
        String::new()
    } else {
        format!("#{} ", e.room)
    };
    let text = e.text.replace('\n', "\n    ");
    let body = match e.kind {
        Kind::Message | Kind::Paste | Kind::Upload => {
            let marker = match e.kind {
                Kind::Paste => "(paste) ",
                Kind::Upload => "(file) ",
                _ => "",
            };
            let reply = if e.refers_to.is_some() { "↳ " } else { "" };
            let private = if e.private {
                let to =
                    e.to.as_ref()
                        .and_then(|t| t.name.clone())
                        .unwrap_or_default();
                paint(Style::new().italic(), &format!("(private → {to}) "))
            } else {
                String::new()
            };
            format!(
                "{reply}{private}{}: {marker}{text}",
                paint(Style::new().bold(), &author)
            )
        }
        Kind::Emote => paint(Style::new().italic(), &format!("* {author} {text}")),
        Kind::Edit => format!(
            "{} {}: {text}",
            paint(
                Style::new().fg_color(Some(Color::Ansi(AnsiColor::Yellow))),
                "✎ edited"
            ),
            author
        ),
        Kind::TagChange => {
            let who = if author.is_empty() {
                String::new()
            } else {
                format!("{author}: ")
            };
            paint(dim, &format!("{who}{}", tag_change_summary(e)))
        }
        Kind::Retraction => paint(
            Style::new().fg_color(Some(Color::Ansi(AnsiColor::Yellow))),
            &format!(
                "✗ retracted {}",
                e.refers_to.as_deref().unwrap_or("a message")
            ),
        ),
        Kind::Gap => paint(
            Style::new()
                .fg_color(Some(Color::Ansi(AnsiColor::BrightRed)))
                .bold(),
            &format!("⚠ gap: {text}"),
        ),
        Kind::Connection => {
            let c = e.connection.as_ref();
            let state = match c.map(|c| c.state) {
                Some(ConnectionState::Connecting) => "↻ connecting",
                Some(ConnectionState::Connected) => "✓ connected",
                Some(ConnectionState::Disconnected) => "↯ disconnected",
                Some(ConnectionState::GaveUp) => "✗ gave up",
                _ => "connection",
            };
            let reason = c
                .and_then(|c| c.reason.clone())
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let retry = c
                .and_then(|c| c.retry_in_ms)
                .map(|ms| format!(" (retry in {:.1}s)", ms as f64 / 1000.0))
                .unwrap_or_default();
            paint(
                Style::new().fg_color(Some(Color::Ansi(AnsiColor::Cyan))),
                &format!("{state}{reason}{retry}"),
            )
        }
        Kind::Viewers => paint(dim, &format!("viewers: {}", e.viewers.unwrap_or(0))),
        Kind::Ignore => paint(dim, &format!("ignoring {author} from now on")),
        Kind::Unignore => paint(dim, &format!("no longer ignoring {author}")),
        Kind::Enter => paint(dim, format!("→ {author} entered {text}").trim_end()),
        Kind::Leave => paint(dim, format!("← {author} left {text}").trim_end()),
        Kind::Kick => paint(dim, format!("⤫ {author} was removed {text}").trim_end()),
        Kind::Topic => paint(dim, &format!("topic: {text}")),
        _ => {
            let what = if text.is_empty() {
                e.kind.as_str().to_owned()
            } else {
                text
            };
            let who = if author.is_empty() {
                String::new()
            } else {
                format!("{author}: ")
            };
            paint(dim, &format!("{who}{what}"))
        }
    };
    format!(
        "{} {tag} {}{body}",
        paint(dim, &time.to_string()),
        paint(dim, &room)
    )
}

/// What a [`Kind::TagChange`] did, on one line: `tags of <msg> changed: +x -y` (its text,
/// usually empty, is not a message of its own).
pub fn tag_change_summary(e: &Event) -> String {
    let changes: Vec<String> = e
        .tags
        .iter()
        .map(|t| format!("+{t}"))
        .chain(e.tags_removed.iter().map(|t| format!("-{t}")))
        .collect();
    let changes = if changes.is_empty() {
        "nothing".to_owned()
    } else {
        changes.join(" ")
    };
    format!(
        "tags of {} changed: {changes}",
        e.refers_to.as_deref().unwrap_or("a message")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::{Author, GapSpan};
    use chrono::TimeZone;

    fn ev(kind: Kind) -> Event {
        let at = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap();
        Event::new("ops", Service::Campfire, kind, "id1", "111", at)
            .with_author(Author::new(Some("7".to_owned()), Some("Ada".to_owned())))
            .with_text("hello")
            .with_raw(serde_json::json!({"type": "TextMessage"}))
    }

    #[test]
    fn json_strips_raw_unless_asked() {
        let mut buf = Vec::new();
        Printer::new(&mut buf, Format::Json, false)
            .print(&mut ev(Kind::Message))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert!(v.get("raw").is_none());
        let mut buf = Vec::new();
        Printer::new(&mut buf, Format::Json, true)
            .print(&mut ev(Kind::Message))
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        assert_eq!(v["raw"]["type"], "TextMessage");
        assert!(buf.ends_with(b"\n") && buf.iter().filter(|&&b| b == b'\n').count() == 1);
    }

    #[test]
    fn pretty_marks_edits_gaps_and_retractions() {
        let plain = |e: &Event| {
            let mut out = Vec::new();
            anstream::StripStream::new(&mut out)
                .write_all(pretty_line(e).as_bytes())
                .unwrap();
            String::from_utf8(out).unwrap()
        };
        let m = plain(&ev(Kind::Message));
        assert!(m.contains("[ops]") && m.contains("Ada: hello"), "{m}");
        assert!(plain(&ev(Kind::Edit)).contains("✎ edited"));
        let mut r = ev(Kind::Retraction);
        r.refers_to = Some("x1".into());
        assert!(plain(&r).contains("✗ retracted x1"));
        let mut g = ev(Kind::Gap);
        g.gap = Some(GapSpan {
            from: g.at,
            to: g.at,
        });
        assert!(plain(&g).contains("⚠ gap"));
        let mut t = ev(Kind::TagChange);
        t.text = String::new();
        t.refers_to = Some("flowdock:o/f:374".into());
        t.tags = vec!["#ops".into()];
        t.tags_removed = vec!["#old".into(), "x".into()];
        let line = plain(&t);
        assert!(
            line.contains("Ada: tags of flowdock:o/f:374 changed: +#ops -#old -x"),
            "{line}"
        );
        t.tags.clear();
        t.tags_removed.clear();
        assert!(plain(&t).contains("changed: nothing"));
        assert!(
            pretty_line(&ev(Kind::Message)).contains('\u{1b}'),
            "coloured before stripping"
        );
    }
}
