//! Property tests: markdown in the supported subset survives markdown → wiki → markdown.

use proptest::prelude::*;
use streamin::markup::{
    Span, Style, markdown_to_wiki, normalize, parse_markdown, parse_wiki, render_markdown,
    render_wiki, wiki_to_markdown,
};

/// Pieces of text, including every character that is markup in either language.
const TOKENS: &[&str] = &[
    "a",
    "b",
    "Z",
    "0",
    " ",
    " ",
    "'",
    "''",
    "*",
    "**",
    "[",
    "]",
    "\\",
    "(",
    ")",
    "<",
    ">",
    "<nowiki>",
    "</nowiki>",
    "http://x",
    "[http://y z]",
    "日本",
    "é",
    "_",
    ":",
    "!",
    ".",
];

fn text(min: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(TOKENS), min..8).prop_map(|v| v.concat())
}

fn styled_text() -> impl Strategy<Value = String> {
    // Styled text has no space just inside its markers (as in CommonMark).
    text(1).prop_filter_map("blank", |s| {
        let t = s.trim().to_owned();
        (!t.is_empty()).then_some(t)
    })
}

fn url() -> impl Strategy<Value = String> {
    (
        prop::sample::select(&["http", "https"][..]),
        "[a-z]{1,8}",
        prop::sample::select(&["com", "org", "io"][..]),
        "(/[a-z0-9_.-]{0,6}){0,2}",
    )
        .prop_map(|(s, h, t, p)| format!("{s}://{h}.{t}{p}"))
}

fn span() -> impl Strategy<Value = Span> {
    prop_oneof![
        text(1).prop_map(|text| Span::Text {
            style: Style::Plain,
            text
        }),
        (
            prop::sample::select(&[Style::Bold, Style::Italic, Style::BoldItalic][..]),
            styled_text()
        )
            .prop_map(|(style, text)| Span::Text { style, text }),
        (url(), text(0)).prop_map(|(url, text)| Span::Link { url, text }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn markdown_round_trips_through_wiki(spans in prop::collection::vec(span(), 0..8)) {
        let spans = normalize(spans);
        let md = render_markdown(&spans);
        prop_assert_eq!(&parse_markdown(&md), &spans, "markdown reads back: {:?}", md);
        let wiki = markdown_to_wiki(&md);
        prop_assert_eq!(&parse_wiki(&wiki), &spans, "wiki reads back: {:?}", wiki);
        prop_assert_eq!(wiki_to_markdown(&wiki), md);
    }

    #[test]
    fn any_markdown_converts_without_panicking(s in "\\PC{0,40}") {
        let wiki = markdown_to_wiki(&s);
        let _ = wiki_to_markdown(&wiki);
        // Whatever came in, the wiki we write reads back to the same spans.
        let spans = parse_markdown(&s);
        prop_assert_eq!(parse_wiki(&render_wiki(&spans)), spans);
    }

    #[test]
    fn any_wiki_converts_without_panicking(s in "[a' *\\[\\]<>/nowikhtp:. ]{0,40}") {
        // Whatever wiki came in, the markdown we write is in the supported subset: it
        // survives markdown -> wiki -> markdown unchanged.
        let md = wiki_to_markdown(&s);
        prop_assert_eq!(wiki_to_markdown(&markdown_to_wiki(&md)), md);
    }
}
