//! The INI dialect of `derecho.cfg`: syntax only, no knowledge of which keys exist.
//!
//! ```text
//! # a whole-line comment
//! [DERECHO]
//! local_id = 3            # a trailing comment
//! [SUBGROUP/CATEGORIZER_TIER]
//! window_size = 3
//! [LAYOUT]
//! json_layout = '[
//!     {"type_alias": "A", "layout": []}
//! ]'
//! ```
//!
//! Rules: a header is `[NAME]` or `[NAME/SUB]`; an entry is `key = value` with both sides
//! trimmed; `#` outside quotes starts a comment; a value that starts with `'` runs to the next
//! single quote, possibly over several lines, and is kept verbatim (inside it, `''` stands for
//! one `'`, our extension so that any string can be written back). Nothing but a comment may
//! follow the closing quote.

use std::path::Path;

use super::error::{ConfigError, Origin};

/// One `key = value` line (or multi-line quoted value) of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct IniEntry {
    /// The section header in force, as written between the brackets (trimmed).
    pub section: String,
    /// The key, trimmed.
    pub name: String,
    /// The value: trimmed and comment-stripped, or the verbatim content of a quoted value.
    pub value: String,
    /// 1-based line of the key.
    pub line: u32,
}

/// A parsed file: its section headers (with their lines) and its entries, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct IniDocument {
    /// Every `[SECTION]` header, normalised, with its 1-based line.
    pub headers: Vec<(String, u32)>,
    /// Every `key = value`.
    pub entries: Vec<IniEntry>,
}

/// Splits `text` into headers and entries. `path` only labels errors.
pub(crate) fn parse_ini(text: &str, path: &Path) -> Result<IniDocument, ConfigError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut doc = IniDocument::default();
    let mut section: Option<String> = None;
    let mut i = 0;
    while i < lines.len() {
        let line_no = line_number(i);
        let line = lines[i].trim();
        i += 1;
        let syntax = |reason: String| ConfigError::Syntax {
            at: Origin::file(path, line_no),
            reason,
        };
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(header) = line.strip_prefix('[') {
            let name = parse_header(header).map_err(|e| syntax(e.to_string()))?;
            doc.headers.push((name.clone(), line_no));
            section = Some(name);
            continue;
        }
        let Some(eq) = line.find('=') else {
            return Err(syntax(format!(
                "expected `key = value`, a `[SECTION]` header or a `#` comment, found `{line}`"
            )));
        };
        let name = line[..eq].trim();
        if name.is_empty() {
            return Err(syntax("empty key before `=`".to_string()));
        }
        if name
            .chars()
            .any(|c| c.is_whitespace() || "[]'#".contains(c))
        {
            return Err(syntax(format!("invalid key `{name}`")));
        }
        let Some(current) = section.clone() else {
            return Err(syntax(format!(
                "key `{name}` appears before any `[SECTION]` header"
            )));
        };
        let rest = line[eq + 1..].trim_start();
        let value = match rest.strip_prefix('\'') {
            Some(quoted) => {
                let (value, next) = read_quoted(quoted, &lines, i, path, line_no)?;
                i = next;
                value
            }
            None => strip_comment(rest).trim_end().to_string(),
        };
        doc.entries.push(IniEntry {
            section: current,
            name: name.to_string(),
            value,
            line: line_no,
        });
    }
    Ok(doc)
}

/// Converts a 0-based line index to the 1-based number used in messages, saturating.
fn line_number(index: usize) -> u32 {
    u32::try_from(index + 1).unwrap_or(u32::MAX)
}

/// What is wrong with a section header line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum HeaderError {
    /// No `]`.
    #[error("section header without a closing `]`")]
    Unclosed,
    /// Something other than a comment after the `]`.
    #[error("unexpected text `{0}` after section header")]
    Trailing(String),
    /// Nothing between the brackets.
    #[error("empty section name `[]`")]
    Empty,
    /// An empty part around a `/`.
    #[error("malformed section name `[{0}]`")]
    Malformed(String),
}

/// Parses what follows the `[` of a header line.
fn parse_header(after_bracket: &str) -> Result<String, HeaderError> {
    let Some(close) = after_bracket.find(']') else {
        return Err(HeaderError::Unclosed);
    };
    let name = after_bracket[..close].trim();
    let trailing = after_bracket[close + 1..].trim();
    if !trailing.is_empty() && !trailing.starts_with('#') {
        return Err(HeaderError::Trailing(trailing.to_string()));
    }
    if name.is_empty() {
        return Err(HeaderError::Empty);
    }
    if name.split('/').any(|part| part.trim().is_empty()) {
        return Err(HeaderError::Malformed(name.to_string()));
    }
    Ok(name.split('/').map(str::trim).collect::<Vec<_>>().join("/"))
}

/// Cuts an unquoted value at its first `#`.
fn strip_comment(value: &str) -> &str {
    match value.find('#') {
        Some(hash) => &value[..hash],
        None => value,
    }
}

/// Reads a quoted value whose text after the opening quote is `first`; further lines are taken
/// from `lines[next..]`. Returns the value and the index of the first unconsumed line.
fn read_quoted(
    first: &str,
    lines: &[&str],
    mut next: usize,
    path: &Path,
    start_line: u32,
) -> Result<(String, usize), ConfigError> {
    let mut value = String::new();
    let mut segment = first;
    let mut segment_line = start_line;
    loop {
        let mut chars = segment.char_indices().peekable();
        while let Some((pos, c)) = chars.next() {
            if c != '\'' {
                value.push(c);
                continue;
            }
            if chars.peek().map(|&(_, n)| n) == Some('\'') {
                chars.next();
                value.push('\'');
                continue;
            }
            let after = segment[pos + 1..].trim();
            if !after.is_empty() && !after.starts_with('#') {
                return Err(ConfigError::Syntax {
                    at: Origin::file(path, segment_line),
                    reason: format!("unexpected text `{after}` after the closing quote"),
                });
            }
            return Ok((value, next));
        }
        let Some(line) = lines.get(next) else {
            return Err(ConfigError::Syntax {
                at: Origin::file(path, start_line),
                reason: "unterminated quoted value (no closing `'` before the end of the file)"
                    .to_string(),
            });
        };
        value.push('\n');
        segment = line;
        segment_line = line_number(next);
        next += 1;
    }
}

/// Formats a value so that [`parse_ini`] reads it back unchanged: bare when that is safe,
/// single-quoted (with `'` doubled) otherwise.
pub(crate) fn format_value(value: &str) -> String {
    let bare_is_safe = !value.contains('#')
        && !value.contains('\n')
        && !value.contains('\r')
        && !value.starts_with('\'')
        && value.trim() == value;
    if bare_is_safe && !value.is_empty() {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "''"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn parse(text: &str) -> Result<Vec<IniEntry>, ConfigError> {
        parse_ini(text, Path::new("t.cfg")).map(|doc| doc.entries)
    }

    fn pairs(text: &str) -> Vec<(String, String, String, u32)> {
        parse(text)
            .unwrap()
            .into_iter()
            .map(|e| (e.section, e.name, e.value, e.line))
            .collect()
    }

    fn syntax_line(text: &str) -> u32 {
        match parse(text) {
            Err(ConfigError::Syntax {
                at: Origin::File { line, .. },
                ..
            }) => line,
            other => panic!("expected a syntax error, got {other:?}"),
        }
    }

    #[test]
    fn sections_keys_comments_and_blank_lines() {
        let text = "# top\n\n[DERECHO]\n  local_id = 3   # trailing\nlocal_ip=127.0.0.1\n\
                    [ SUBGROUP / A ] # header comment\nwindow_size = 2\n";
        assert_eq!(
            pairs(text),
            vec![
                ("DERECHO".into(), "local_id".into(), "3".into(), 4),
                ("DERECHO".into(), "local_ip".into(), "127.0.0.1".into(), 5),
                ("SUBGROUP/A".into(), "window_size".into(), "2".into(), 7),
            ]
        );
    }

    #[test]
    fn headers_are_listed_even_when_empty() {
        let doc = parse_ini("[A]\n[B/C]\nk = v\n", Path::new("t.cfg")).unwrap();
        assert_eq!(doc.headers, vec![("A".into(), 1), ("B/C".into(), 2)]);
    }

    #[test]
    fn empty_values_and_crlf() {
        let text = "[X]\r\na =\r\nb = # only a comment\r\n";
        let got = pairs(text);
        assert_eq!(got[0].2, "");
        assert_eq!(got[1].2, "");
    }

    #[test]
    fn quoted_values_keep_hash_and_span_lines() {
        let text = "[LAYOUT]\njson_layout = '[\n  {\"a\": \"#1\"}\n]'  # done\nnext = 1\n";
        let got = pairs(text);
        assert_eq!(got[0].2, "[\n  {\"a\": \"#1\"}\n]");
        assert_eq!(got[0].3, 2);
        assert_eq!(got[1].1, "next");
        assert_eq!(got[1].3, 5);
    }

    #[test]
    fn doubled_quote_is_a_literal_quote() {
        let got = pairs("[X]\na = 'it''s # here'\nb = ''\nc = ''''\n");
        assert_eq!(got[0].2, "it's # here");
        assert_eq!(got[1].2, "");
        assert_eq!(got[2].2, "'");
    }

    #[test]
    fn malformed_lines_name_their_line() {
        assert_eq!(syntax_line("[X]\nno equals sign\n"), 2);
        assert_eq!(syntax_line("key = 1\n"), 1);
        assert_eq!(syntax_line("[X]\n\n = 1\n"), 3);
        assert_eq!(syntax_line("[X]\na = 'open\nstill open\n"), 2);
        assert_eq!(syntax_line("[X]\na = 'x' y\n"), 2);
        assert_eq!(syntax_line("[X\n"), 1);
        assert_eq!(syntax_line("[]\n"), 1);
        assert_eq!(syntax_line("[A//B]\n"), 1);
        assert_eq!(syntax_line("[X]\nmy key = 1\n"), 2);
    }

    #[test]
    fn format_value_round_trips() {
        for v in [
            "plain",
            "",
            " padded ",
            "a#b",
            "'q",
            "it's",
            "multi\nline",
            "both ' and #",
        ] {
            let text = format!("[X]\nk = {}\n", format_value(v));
            assert_eq!(pairs(&text)[0].2, v, "value {v:?} via {text:?}");
        }
        assert_eq!(format_value("plain"), "plain");
        assert_eq!(format_value("it's"), "it's");
    }
}
