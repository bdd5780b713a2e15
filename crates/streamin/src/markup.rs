//! Markdown ↔ StreamIn wiki markup.
//!
//! The supported subset, both ways:
//!
//! | markdown        | wiki                     |
//! |-----------------|--------------------------|
//! | `**bold**`      | `'''bold'''`             |
//! | `*italic*`      | `''italic''`             |
//! | `***both***`    | `''''both''''` (as the document writes it; `'''''both'''''` is read too) |
//! | `[text](url)`   | `[url text]`             |
//!
//! Literal characters that would read as markup are escaped: in markdown with a backslash
//! (`\*`, `\[`, `\]`, `\\`), in wiki with `<nowiki>…</nowiki>` (runs of apostrophes, an
//! apostrophe touching markup, a `[` that would start a link, a literal `<nowiki>`).

/// The style of a run of text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Style {
    /// No formatting.
    Plain,
    /// Bold.
    Bold,
    /// Italic.
    Italic,
    /// Bold and italic.
    BoldItalic,
}

impl Style {
    fn from_flags(bold: bool, italic: bool) -> Style {
        match (bold, italic) {
            (false, false) => Style::Plain,
            (true, false) => Style::Bold,
            (false, true) => Style::Italic,
            (true, true) => Style::BoldItalic,
        }
    }

    fn wiki_marker(self) -> &'static str {
        match self {
            Style::Plain => "",
            Style::Bold => "'''",
            Style::Italic => "''",
            Style::BoldItalic => "''''",
        }
    }

    fn md_marker(self) -> &'static str {
        match self {
            Style::Plain => "",
            Style::Bold => "**",
            Style::Italic => "*",
            Style::BoldItalic => "***",
        }
    }
}

/// One piece of formatted text: the common model of both markups.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Span {
    /// Text in a style.
    Text {
        /// The style.
        style: Style,
        /// The literal text.
        text: String,
    },
    /// A link.
    Link {
        /// The target URL.
        url: String,
        /// The shown text (may be empty).
        text: String,
    },
}

/// Merges neighbouring text of the same style and drops empty text.
pub fn normalize(spans: Vec<Span>) -> Vec<Span> {
    let mut out: Vec<Span> = Vec::with_capacity(spans.len());
    for s in spans {
        match s {
            Span::Text { text, .. } if text.is_empty() => {}
            Span::Text { style, text } => {
                if let Some(Span::Text {
                    style: prev,
                    text: prev_text,
                }) = out.last_mut()
                {
                    if *prev == style {
                        prev_text.push_str(&text);
                        continue;
                    }
                }
                out.push(Span::Text { style, text });
            }
            link => out.push(link),
        }
    }
    out
}

/// Converts markdown (the supported subset) to StreamIn wiki markup.
pub fn markdown_to_wiki(markdown: &str) -> String {
    render_wiki(&parse_markdown(markdown))
}

/// Converts StreamIn wiki markup to markdown.
pub fn wiki_to_markdown(wiki: &str) -> String {
    render_markdown(&parse_wiki(wiki))
}

// ---------------------------------------------------------------------------------------
// markdown

/// Reads markdown into spans; markup that is not closed stays literal text.
pub fn parse_markdown(input: &str) -> Vec<Span> {
    let c: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\\' if i + 1 < c.len() && is_md_escapable(c[i + 1]) => {
                buf.push(c[i + 1]);
                i += 2;
            }
            '*' => {
                let n = run_len(&c, i, '*');
                let mut matched = false;
                for m in (1..=n.min(3)).rev() {
                    // The opener is the last `m` stars of the run; earlier ones are literal.
                    let open = i + n - m;
                    if let Some((close, text)) = find_md_closer(&c, open + m, m) {
                        buf.extend(std::iter::repeat_n('*', n - m));
                        flush(&mut out, &mut buf, Style::Plain);
                        let style = match m {
                            1 => Style::Italic,
                            2 => Style::Bold,
                            _ => Style::BoldItalic,
                        };
                        out.push(Span::Text { style, text });
                        i = close + m;
                        matched = true;
                        break;
                    }
                }
                if !matched {
                    buf.extend(std::iter::repeat_n('*', n));
                    i += n;
                }
            }
            '[' => match parse_md_link(&c, i) {
                Some((end, text, url)) => {
                    flush(&mut out, &mut buf, Style::Plain);
                    out.push(Span::Link { url, text });
                    i = end;
                }
                None => {
                    buf.push('[');
                    i += 1;
                }
            },
            ch => {
                buf.push(ch);
                i += 1;
            }
        }
    }
    flush(&mut out, &mut buf, Style::Plain);
    normalize(out)
}

fn is_md_escapable(ch: char) -> bool {
    ch.is_ascii_punctuation()
}

fn run_len(c: &[char], i: usize, ch: char) -> usize {
    c[i..].iter().take_while(|&&x| x == ch).count()
}

fn flush(out: &mut Vec<Span>, buf: &mut String, style: Style) {
    if !buf.is_empty() {
        out.push(Span::Text {
            style,
            text: std::mem::take(buf),
        });
    }
}

/// Finds the first unescaped run of at least `m` stars after non-empty content starting at
/// `start`; returns its index and the unescaped content.
fn find_md_closer(c: &[char], start: usize, m: usize) -> Option<(usize, String)> {
    let mut text = String::new();
    let mut j = start;
    while j < c.len() {
        match c[j] {
            '\\' if j + 1 < c.len() && is_md_escapable(c[j + 1]) => {
                text.push(c[j + 1]);
                j += 2;
            }
            '*' => {
                let n = run_len(c, j, '*');
                // Like CommonMark's flanking rules: no space just inside the markers.
                let flanked = text.chars().next().is_some_and(|c| !c.is_whitespace())
                    && text.chars().last().is_some_and(|c| !c.is_whitespace());
                if n >= m && flanked {
                    return Some((j, text));
                }
                return None;
            }
            ch => {
                text.push(ch);
                j += 1;
            }
        }
    }
    None
}

/// `[text](url)` at `i`: returns the index after it, the unescaped text and the url.
fn parse_md_link(c: &[char], i: usize) -> Option<(usize, String, String)> {
    let mut text = String::new();
    let mut j = i + 1;
    loop {
        match c.get(j)? {
            '\\' if j + 1 < c.len() && is_md_escapable(c[j + 1]) => {
                text.push(c[j + 1]);
                j += 2;
            }
            ']' => break,
            '[' => return None,
            &ch => {
                text.push(ch);
                j += 1;
            }
        }
    }
    if c.get(j + 1) != Some(&'(') {
        return None;
    }
    let mut url = String::new();
    let mut k = j + 2;
    loop {
        match c.get(k)? {
            ')' => break,
            ch if ch.is_whitespace() => return None,
            &ch => {
                url.push(ch);
                k += 1;
            }
        }
    }
    if url.is_empty() {
        return None;
    }
    Some((k + 1, text, url))
}

fn escape_md(text: &str) -> String {
    let mut s = String::with_capacity(text.len());
    for ch in text.chars() {
        if matches!(ch, '\\' | '*' | '[' | ']') {
            s.push('\\');
        }
        s.push(ch);
    }
    s
}

/// Writes spans as markdown.
pub fn render_markdown(spans: &[Span]) -> String {
    let mut s = String::new();
    for span in spans {
        match span {
            Span::Text { style, text } if *style != Style::Plain => {
                // Spaces just inside markers would not read back: move them outside.
                let inner = text.trim();
                let lead = &text[..text.len() - text.trim_start().len()];
                let trail = &text[text.trim_end().len()..];
                s.push_str(&escape_md(lead));
                if !inner.is_empty() {
                    s.push_str(style.md_marker());
                    s.push_str(&escape_md(inner));
                    s.push_str(style.md_marker());
                }
                s.push_str(&escape_md(trail));
            }
            Span::Text { text, .. } => s.push_str(&escape_md(text)),
            Span::Link { url, text } => {
                s.push('[');
                s.push_str(&escape_md(text));
                s.push_str("](");
                s.push_str(&url.replace(')', "%29").replace(' ', "%20"));
                s.push(')');
            }
        }
    }
    s
}

// ---------------------------------------------------------------------------------------
// wiki

const NOWIKI_OPEN: &str = "<nowiki>";
const NOWIKI_CLOSE: &str = "</nowiki>";

fn starts_with_at(c: &[char], i: usize, pat: &str) -> bool {
    (i..).zip(pat.chars()).all(|(k, p)| c.get(k) == Some(&p))
}

/// Whether a link starts right after `[` at `i`: `scheme://`.
fn url_starts(c: &[char], i: usize) -> bool {
    let mut k = i;
    if !c.get(k).is_some_and(|ch| ch.is_ascii_alphabetic()) {
        return false;
    }
    while c
        .get(k)
        .is_some_and(|ch| ch.is_ascii_alphanumeric() || matches!(ch, '+' | '.' | '-'))
    {
        k += 1;
    }
    starts_with_at(c, k, "://")
}

/// Reads `<nowiki>...</nowiki>` at `i`: the index after it and the literal content.
fn read_nowiki(c: &[char], i: usize) -> Option<(usize, String)> {
    if !starts_with_at(c, i, NOWIKI_OPEN) {
        return None;
    }
    let start = i + NOWIKI_OPEN.chars().count();
    let mut k = start;
    while k < c.len() {
        if starts_with_at(c, k, NOWIKI_CLOSE) {
            return Some((
                k + NOWIKI_CLOSE.chars().count(),
                c[start..k].iter().collect(),
            ));
        }
        k += 1;
    }
    None
}

/// Reads wiki markup into spans. Apostrophe runs toggle styles: 2 italic, 3 bold, 4 (or 5)
/// both; a run that closes one style may open another (`'''a'''''b''`).
pub fn parse_wiki(input: &str) -> Vec<Span> {
    let c: Vec<char> = input.chars().collect();
    let mut out = Vec::new();
    let mut buf = String::new();
    let (mut bold, mut italic) = (false, false);
    let mut i = 0;
    while i < c.len() {
        if c[i] == '<' {
            if let Some((end, lit)) = read_nowiki(&c, i) {
                buf.push_str(&lit);
                i = end;
                continue;
            }
        }
        if c[i] == '\'' {
            let mut n = run_len(&c, i, '\'');
            i += n;
            if n == 1 {
                buf.push('\'');
                continue;
            }
            flush(&mut out, &mut buf, Style::from_flags(bold, italic));
            while n > 0 {
                if bold && italic && n == 5 {
                    // MediaWiki's closing run for bold italic.
                    bold = false;
                    italic = false;
                    n = 0;
                } else if bold && italic && n >= 4 {
                    bold = false;
                    italic = false;
                    n -= 4;
                } else if bold && n >= 3 {
                    bold = false;
                    n -= 3;
                } else if italic && n >= 2 {
                    italic = false;
                    n -= 2;
                } else if n >= 5 && !bold && !italic {
                    bold = true;
                    italic = true;
                    n -= 5;
                } else if n >= 4 && !bold && !italic {
                    bold = true;
                    italic = true;
                    n -= 4;
                } else if n >= 3 && !bold {
                    bold = true;
                    n -= 3;
                } else if n >= 2 && !italic {
                    italic = true;
                    n -= 2;
                } else {
                    buf.extend(std::iter::repeat_n('\'', n));
                    n = 0;
                }
            }
            continue;
        }
        if c[i] == '[' && url_starts(&c, i + 1) {
            if let Some((end, url, text)) = parse_wiki_link(&c, i) {
                flush(&mut out, &mut buf, Style::from_flags(bold, italic));
                out.push(Span::Link { url, text });
                i = end;
                continue;
            }
        }
        buf.push(c[i]);
        i += 1;
    }
    flush(&mut out, &mut buf, Style::from_flags(bold, italic));
    normalize(out)
}

/// `[url text]` at `i`: the index after it, the url and the (unescaped) text.
fn parse_wiki_link(c: &[char], i: usize) -> Option<(usize, String, String)> {
    let mut url = String::new();
    let mut k = i + 1;
    while let Some(&ch) = c.get(k) {
        if ch == ' ' || ch == ']' {
            break;
        }
        if ch.is_whitespace() {
            return None;
        }
        url.push(ch);
        k += 1;
    }
    let mut text = String::new();
    if c.get(k) == Some(&' ') {
        k += 1;
        loop {
            match c.get(k)? {
                ']' => break,
                '<' => {
                    if let Some((end, lit)) = read_nowiki(c, k) {
                        text.push_str(&lit);
                        k = end;
                    } else {
                        text.push('<');
                        k += 1;
                    }
                }
                &ch => {
                    text.push(ch);
                    k += 1;
                }
            }
        }
    }
    if c.get(k) != Some(&']') {
        return None;
    }
    Some((k + 1, url, text))
}

fn nowiki(s: &mut String, lit: &str) {
    s.push_str(NOWIKI_OPEN);
    s.push_str(lit);
    s.push_str(NOWIKI_CLOSE);
}

/// Escapes literal text for wiki; `quote_before`/`quote_after` say whether markup quotes
/// touch it on that side; `in_link` also escapes `]`.
fn escape_wiki(text: &str, quote_before: bool, quote_after: bool, in_link: bool) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut s = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\'' => {
                let n = run_len(&c, i, '\'');
                let touches = (i == 0 && quote_before) || (i + n == c.len() && quote_after);
                let run: String = c[i..i + n].iter().collect();
                if n >= 2 || touches {
                    nowiki(&mut s, &run);
                } else {
                    s.push_str(&run);
                }
                i += n;
            }
            '[' if url_starts(&c, i + 1) => {
                nowiki(&mut s, "[");
                i += 1;
            }
            ']' if in_link => {
                nowiki(&mut s, "]");
                i += 1;
            }
            '<' if starts_with_at(&c, i, NOWIKI_OPEN) || starts_with_at(&c, i, NOWIKI_CLOSE) => {
                nowiki(&mut s, "<");
                i += 1;
            }
            ch => {
                s.push(ch);
                i += 1;
            }
        }
    }
    s
}

/// Writes spans as wiki markup.
pub fn render_wiki(spans: &[Span]) -> String {
    let styled =
        |s: Option<&Span>| matches!(s, Some(Span::Text { style, .. }) if *style != Style::Plain);
    let mut s = String::new();
    for (k, span) in spans.iter().enumerate() {
        match span {
            Span::Text { style, text } => {
                let marker = style.wiki_marker();
                let (before, after) = if *style == Style::Plain {
                    (k > 0 && styled(spans.get(k - 1)), styled(spans.get(k + 1)))
                } else {
                    (true, true)
                };
                s.push_str(marker);
                s.push_str(&escape_wiki(text, before, after, false));
                s.push_str(marker);
            }
            Span::Link { url, text } => {
                s.push('[');
                s.push_str(&url.replace(' ', "%20").replace(']', "%5D"));
                if !text.is_empty() {
                    s.push(' ');
                    s.push_str(&escape_wiki(text, false, false, true));
                }
                s.push(']');
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documents_examples() {
        assert_eq!(
            markdown_to_wiki("**this will be bold**"),
            "'''this will be bold'''"
        );
        assert_eq!(
            markdown_to_wiki("*this will be italic*"),
            "''this will be italic''"
        );
        assert_eq!(
            markdown_to_wiki("***this will be bold and italic***"),
            "''''this will be bold and italic''''"
        );
        assert_eq!(
            markdown_to_wiki("[my_link_text](http://my_link_url)"),
            "[http://my_link_url my_link_text]"
        );
        assert_eq!(wiki_to_markdown("'''b'''"), "**b**");
        assert_eq!(wiki_to_markdown("''i''"), "*i*");
        assert_eq!(wiki_to_markdown("''''bi''''"), "***bi***");
        assert_eq!(wiki_to_markdown("'''''bi'''''"), "***bi***");
        assert_eq!(
            wiki_to_markdown("[http://my_link_url my_link_text]"),
            "[my_link_text](http://my_link_url)"
        );
    }

    #[test]
    fn mixed_text() {
        let md = "Deploy **done** in *prod*, see [the log](https://ci.example/1) ***now***!";
        let wiki = markdown_to_wiki(md);
        assert_eq!(
            wiki,
            "Deploy '''done''' in ''prod'', see [https://ci.example/1 the log] ''''now''''!"
        );
        assert_eq!(wiki_to_markdown(&wiki), md);
    }

    #[test]
    fn adjacent_styles_survive() {
        for md in [
            "**a***b*",
            "*a***b**",
            "***a*****b**",
            "**a*****b***",
            "*a****b***",
            "***a****b*",
        ] {
            assert_eq!(wiki_to_markdown(&markdown_to_wiki(md)), md, "{md}");
        }
        assert_eq!(markdown_to_wiki("**a***b*"), "'''a'''''b''");
    }

    #[test]
    fn literal_quotes_and_stars_are_escaped() {
        // An apostrophe is fine alone, but runs and ones touching markup are escaped.
        assert_eq!(markdown_to_wiki("it's"), "it's");
        assert_eq!(markdown_to_wiki("a '' b"), "a <nowiki>''</nowiki> b");
        assert_eq!(
            markdown_to_wiki("**'quoted'**"),
            "'''<nowiki>'</nowiki>quoted<nowiki>'</nowiki>'''"
        );
        assert_eq!(wiki_to_markdown("a <nowiki>''</nowiki> b"), "a '' b");
        // Stars are literal in wiki and escaped in markdown.
        assert_eq!(markdown_to_wiki(r"2 \* 3"), "2 * 3");
        assert_eq!(wiki_to_markdown("2 * 3 [x]"), r"2 \* 3 \[x\]");
        // Unclosed markdown stays literal.
        assert_eq!(markdown_to_wiki("a * b ** c"), "a * b ** c");
        // A bracket that would start a link is escaped.
        assert_eq!(
            markdown_to_wiki(r"\[http://x y\]"),
            "<nowiki>[</nowiki>http://x y]"
        );
        assert_eq!(
            wiki_to_markdown("<nowiki>[</nowiki>http://x y]"),
            r"\[http://x y\]"
        );
        // A literal <nowiki> survives.
        let md = "<nowiki>x</nowiki>";
        assert_eq!(wiki_to_markdown(&markdown_to_wiki(md)), md);
    }

    #[test]
    fn links_with_odd_text() {
        let md = r"[a \] b's ''q''](http://h/p)";
        let wiki = markdown_to_wiki(md);
        assert_eq!(
            wiki,
            "[http://h/p a <nowiki>]</nowiki> b's <nowiki>''</nowiki>q<nowiki>''</nowiki>]"
        );
        assert_eq!(wiki_to_markdown(&wiki), md);
        assert_eq!(wiki_to_markdown("[http://h/p]"), "[](http://h/p)");
        assert_eq!(wiki_to_markdown("[not a link]"), r"\[not a link\]");
    }
}
