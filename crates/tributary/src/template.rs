//! Relay text templates, parsed once when the config is read and rendered per event.

use chat_model::{Event, Kind};

/// The template used when a relay has none.
pub const DEFAULT_TEMPLATE: &str = "{author} in {room}: {text}";

/// Placeholders a relay template may use.
pub const TEMPLATE_KEYS: &[&str] = &["author", "room", "text", "source", "kind", "service"];

/// One event field a template can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Field {
    Author,
    Room,
    Text,
    Source,
    Kind,
    Service,
}

impl Field {
    fn parse(key: &str) -> Option<Field> {
        Some(match key {
            "author" => Field::Author,
            "room" => Field::Room,
            "text" => Field::Text,
            "source" => Field::Source,
            "kind" => Field::Kind,
            "service" => Field::Service,
            _ => return None,
        })
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Literal(String),
    Field(Field),
}

/// A parsed template: literal text and `{field}` placeholders (an unclosed `{` is literal).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    pieces: Vec<Piece>,
}

/// A template named a placeholder that does not exist.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown placeholder {{{0}}}; valid: {valid}", valid = valid_keys())]
pub struct UnknownPlaceholder(pub String);

fn valid_keys() -> String {
    let keys: Vec<String> = TEMPLATE_KEYS.iter().map(|k| format!("{{{k}}}")).collect();
    keys.join(", ")
}

impl Default for Template {
    fn default() -> Self {
        Template::parse(DEFAULT_TEMPLATE).expect("the default template is valid")
    }
}

impl Template {
    /// Parses `text`; every `{...}` must name one of [`TEMPLATE_KEYS`].
    pub fn parse(text: &str) -> Result<Template, UnknownPlaceholder> {
        let mut pieces = Vec::new();
        let mut literal = String::new();
        let mut rest = text;
        while let Some(start) = rest.find('{') {
            let after = &rest[start + 1..];
            let Some(end) = after.find('}') else {
                break;
            };
            literal.push_str(&rest[..start]);
            let key = &after[..end];
            let field = Field::parse(key).ok_or_else(|| UnknownPlaceholder(key.to_owned()))?;
            if !literal.is_empty() {
                pieces.push(Piece::Literal(std::mem::take(&mut literal)));
            }
            pieces.push(Piece::Field(field));
            rest = &after[end + 1..];
        }
        literal.push_str(rest);
        if !literal.is_empty() {
            pieces.push(Piece::Literal(literal));
        }
        Ok(Template { pieces })
    }

    /// The template filled from `e` (a tag change without text says what it did).
    pub fn render(&self, e: &Event) -> String {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Literal(s) => out.push_str(s),
                Piece::Field(Field::Author) => out.push_str(
                    e.author
                        .name
                        .as_deref()
                        .or(e.author.id.as_deref())
                        .unwrap_or("someone"),
                ),
                Piece::Field(Field::Room) => out.push_str(&e.room),
                Piece::Field(Field::Text) => {
                    // A tag change has no text of its own: relay what it did, never nothing.
                    if e.kind == Kind::TagChange && e.text.trim().is_empty() {
                        out.push_str(&crate::output::tag_change_summary(e));
                    } else {
                        out.push_str(&e.text);
                    }
                }
                Piece::Field(Field::Source) => out.push_str(&e.source),
                Piece::Field(Field::Kind) => out.push_str(e.kind.as_str()),
                Piece::Field(Field::Service) => out.push_str(e.service.as_str()),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_model::{Author, Service};
    use proptest::prelude::*;

    fn ev(kind: Kind, text: &str) -> Event {
        Event::new(
            "flows",
            Service::Flowdock,
            kind,
            "1",
            "acme/main",
            chrono::Utc::now(),
        )
        .with_author(Author::new(Some("1".to_owned()), Some("Ada".to_owned())))
        .with_text(text)
    }

    #[test]
    fn render_fills_every_placeholder() {
        let e = ev(Kind::Message, "deploy done");
        assert_eq!(
            Template::default().render(&e),
            "Ada in acme/main: deploy done"
        );
        assert_eq!(
            Template::parse("[{source}/{kind}@{service}] {text} {x")
                .unwrap()
                .render(&e),
            "[flows/message@flowdock] deploy done {x"
        );
    }

    #[test]
    fn unknown_placeholders_are_refused_and_unclosed_braces_are_text() {
        assert_eq!(
            Template::parse("{who} said"),
            Err(UnknownPlaceholder("who".into()))
        );
        let t = Template::parse("a {b").unwrap();
        assert_eq!(t.pieces, vec![Piece::Literal("a {b".into())]);
        assert!(TEMPLATE_KEYS.iter().all(|k| Field::parse(k).is_some()));
        assert_eq!(
            UnknownPlaceholder("who".into()).to_string(),
            "unknown placeholder {who}; valid: {author}, {room}, {text}, {source}, {kind}, {service}"
        );
    }

    proptest! {
        /// Text without braces renders as itself; every valid key parses.
        #[test]
        fn literal_text_round_trips(s in "[^{}]{0,40}", k in 0usize..6) {
            let t = Template::parse(&s).unwrap();
            let e = ev(Kind::Message, "x");
            prop_assert_eq!(t.render(&e), s.clone());
            let with_key = format!("{s}{{{}}}{s}", TEMPLATE_KEYS[k]);
            prop_assert!(Template::parse(&with_key).is_ok());
        }
    }
}
