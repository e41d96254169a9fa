//! Cutting a large file into pieces parsed one at a time, and TOML syntax
//! errors told in a user's words.
//!
//! This is a child module of `decode.rs`.

use super::*;

/// A TOML syntax error in words a user recognises: an unclosed string where
/// it starts (the parser notices it only later), and both places of a table
/// or key defined twice.
pub(super) fn syntax_error(text: &str, span: Span, message: &str) -> Diagnostic {
    if let Some(quote) = unclosed_string(text).filter(|&q| q <= span.start) {
        let q = &text[quote..quote + 1];
        return Diagnostic::at(Code::TomlSyntax, quote..quote + 1, "invalid TOML: unclosed string")
            .label("this string is not closed on its line")
            .help(format!(
                "add the closing {q} before the end of the line; a string that spans lines is written with triple quotes ({q}{q}{q})"
            ));
    }
    let twice = match message {
        "duplicate key" => defined_twice(text, &span),
        _ => None,
    };
    twice.unwrap_or_else(|| {
        let d = Diagnostic::at(Code::TomlSyntax, span, format!("invalid TOML: {message}"))
            .label(message.to_string());
        match message {
            // Neither a header nor a key seen twice: a dotted key (`process.a.cmd`)
            // made the table before its header, or an inline table did.
            "duplicate key" => d.help(
                "this table or key is defined twice: a dotted key such as `process.a.cmd = …` or an inline table already defines the table; write all its keys in one place",
            ),
            _ => d,
        }
    })
}

/// toml's "duplicate key" with the first definition too, when it can be found.
fn defined_twice(text: &str, span: &Span) -> Option<Diagnostic> {
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    if text[line_start..line_end].trim_start().starts_with('[') {
        table_defined_twice(text, line_start..line_end)
    } else {
        key_defined_twice(text, span, line_start)
    }
}

/// A table header defined twice (the second on `line`): finds the first one.
fn table_defined_twice(text: &str, line: Span) -> Option<Diagnostic> {
    let (line_start, line_end) = (line.start, line.end);
    let line = &text[line];
    let squash = |l: &str| -> String {
        l.split('#')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect()
    };
    let trimmed = line.trim_start();
    let header = squash(line);
    let mut pos = 0;
    for l in text[..line_start].split_inclusive('\n') {
        if squash(l) == header {
            let at = pos + (l.len() - l.trim_start().len());
            let shown = header.trim_start_matches('[').trim_end_matches(']');
            return Some(
                Diagnostic::at(
                    Code::TomlSyntax,
                    line_start + (line.len() - trimmed.len())..line_end,
                    format!("invalid TOML: table `[{shown}]` is defined twice"),
                )
                .label("defined again here")
                .related(
                    at..at + l.trim_end().len() - (l.len() - l.trim_start().len()),
                    "first defined here",
                )
                .help("merge the two tables into one; a table header may appear only once"),
            );
        }
        pos += l.len();
    }
    None
}

/// A key defined twice in one table: looks back to the table's header for
/// the first one.
fn key_defined_twice(text: &str, span: &Span, line_start: usize) -> Option<Diagnostic> {
    let key = text.get(span.clone()).filter(|k| !k.is_empty())?;
    let mut pos = line_start;
    for l in text[..line_start].split_inclusive('\n').rev() {
        pos -= l.len();
        let t = l.trim_start();
        if t.starts_with('[') {
            break;
        }
        if let Some(rest) = t.strip_prefix(key) {
            if rest.trim_start().starts_with('=') {
                let at = pos + (l.len() - t.len());
                return Some(
                    Diagnostic::at(
                        Code::TomlSyntax,
                        span.clone(),
                        format!("invalid TOML: `{key}` is defined twice in one table"),
                    )
                    .label("defined again here")
                    .related(at..at + key.len(), "first defined here")
                    .help("keep one of the two; a key may appear only once per table"),
                );
            }
        }
    }
    None
}

/// The byte offset of the opening quote of the first single-line string that
/// is not closed on its line, if any.
fn unclosed_string(text: &str) -> Option<usize> {
    let mut multiline: Option<&str> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if let Some(delim) = multiline {
                if delim == "\"\"\"" && b[i] == b'\\' {
                    i += 2;
                    continue;
                }
                if b[i..].starts_with(delim.as_bytes()) {
                    multiline = None;
                    i += 3;
                    while i < b.len() && b[i] == delim.as_bytes()[0] {
                        i += 1;
                    }
                } else {
                    i += 1;
                }
                continue;
            }
            match b[i] {
                b'#' => break,
                q @ (b'"' | b'\'') => {
                    if b[i..].starts_with(b"\"\"\"") || b[i..].starts_with(b"'''") {
                        multiline = Some(if q == b'"' { "\"\"\"" } else { "\'\'\'" });
                        i += 3;
                        continue;
                    }
                    let open = i;
                    i += 1;
                    loop {
                        match b.get(i) {
                            None | Some(b'\n') | Some(b'\r') => return Some(start + open),
                            Some(b'\\') if q == b'"' => i += 2,
                            Some(&c) if c == q => {
                                i += 1;
                                break;
                            }
                            Some(_) => i += 1,
                        }
                    }
                }
                _ => i += 1,
            }
        }
    }
    None
}

/// Files above this size are parsed in pieces.
const PIECE_BYTES: usize = 512 * 1024;

/// Byte ranges to parse one at a time. toml builds a token and an event list
/// for the whole document before its tree, which more than doubles the peak
/// memory of a large generated file; parsing it in pieces cut at table headers
/// keeps that transient small. Cutting is only done where it cannot change
/// the meaning: at a `[kind.name...]` header whose `kind.name` prefix is not
/// open across the cut, in files without array-of-tables, quoted header keys,
/// or dotted keys at the top level. Anything unusual is parsed whole.
pub(super) fn pieces(text: &str) -> Vec<std::ops::Range<usize>> {
    let whole = || std::iter::once(0..text.len()).collect();
    if text.len() <= PIECE_BYTES {
        return whole();
    }
    let Some(headers) = scan_headers(text) else {
        return whole();
    };
    // A cut before header i is unsafe if some prefix appears both before and at/after i.
    let mut first: rustc_hash::FxHashMap<&str, usize> = Default::default();
    let mut last: rustc_hash::FxHashMap<&str, usize> = Default::default();
    for (i, h) in headers.iter().enumerate() {
        first.entry(h.prefix).or_insert(i);
        last.insert(h.prefix, i);
    }
    let mut open = vec![0i32; headers.len() + 1];
    for (p, &f) in &first {
        let l = last[p];
        if l > f {
            open[f + 1] += 1;
            open[l + 1] -= 1;
        }
    }
    let mut out = Vec::new();
    let mut start = 0;
    let mut depth = 0;
    for (i, h) in headers.iter().enumerate() {
        depth += open[i];
        if depth == 0 && h.components >= 2 && h.pos >= start + PIECE_BYTES {
            out.push(start..h.pos);
            start = h.pos;
        }
    }
    out.push(start..text.len());
    out
}

struct Header<'a> {
    pos: usize,
    prefix: &'a str,
    components: usize,
}

/// Table headers of a simple document, or `None` when the layout is unusual.
fn scan_headers(text: &str) -> Option<Vec<Header<'_>>> {
    let mut headers = Vec::new();
    let mut depth = 0i32;
    let mut multiline: Option<&str> = None;
    let mut pos = 0;
    for line in text.split_inclusive('\n') {
        let start = pos;
        pos += line.len();
        if multiline.is_none() && depth == 0 {
            let t = line.trim_start();
            if let Some(rest) = t.strip_prefix('[') {
                if rest.starts_with('[') {
                    return None;
                }
                let key = &rest[..rest.find(']')?];
                if key.contains(['"', '\'']) {
                    return None;
                }
                let parts: Vec<&str> = key.split('.').map(str::trim).collect();
                if parts.len() == 1 && !matches!(parts[0], "graph" | "env" | "slurm") {
                    return None;
                }
                let prefix_len = if parts.len() >= 2 {
                    key.find('.')
                        .and_then(|d| key[d + 1..].find('.').map(|e| d + 1 + e))
                        .unwrap_or(key.len())
                } else {
                    key.len()
                };
                headers.push(Header {
                    pos: start + (line.len() - t.len()),
                    prefix: key[..prefix_len].trim(),
                    components: parts.len(),
                });
                continue;
            }
            if headers.is_empty() {
                if let Some(eq) = t.find('=') {
                    if t[..eq].contains(['.', '"', '\'']) {
                        return None;
                    }
                }
            }
        }
        scan_line(line, &mut multiline, &mut depth)?;
    }
    (multiline.is_none() && depth == 0).then_some(headers)
}

/// Tracks multi-line strings and bracket depth across one line of values.
fn scan_line(line: &str, multiline: &mut Option<&'static str>, depth: &mut i32) -> Option<()> {
    let b = line.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if let Some(delim) = *multiline {
            if delim == "\"\"\"" && b[i] == b'\\' {
                i += 2;
                continue;
            }
            if b[i..].starts_with(delim.as_bytes()) {
                *multiline = None;
                i += 3;
                while i < b.len() && b[i] == delim.as_bytes()[0] {
                    i += 1; // up to two quotes may close the string's content
                }
            } else {
                i += 1;
            }
            continue;
        }
        match b[i] {
            b'#' => return Some(()),
            b'"' | b'\'' => {
                let q = b[i];
                if b[i..].starts_with(b"\"\"\"") || b[i..].starts_with(b"'''") {
                    *multiline = Some(if q == b'"' { "\"\"\"" } else { "\'\'\'" });
                    i += 3;
                    continue;
                }
                i += 1;
                loop {
                    match b.get(i) {
                        None | Some(b'\n') => return None,
                        Some(b'\\') if q == b'"' => i += 2,
                        Some(&c) if c == q => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'[' | b'{' => {
                *depth += 1;
                i += 1;
            }
            b']' | b'}' => {
                *depth -= 1;
                if *depth < 0 {
                    return None;
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn big(n: usize, extra: &str) -> String {
        let mut s = String::from("version = 1\n");
        for i in 0..n {
            s.push_str(&format!(
                "[process.p{i}]\ncmd = [\"true\", \"{}\"]\n\n",
                "x".repeat(40)
            ));
        }
        s.push_str(extra);
        s
    }

    fn check(text: String) -> (Option<JobFile>, Vec<Diagnostic>, SourceFile) {
        let src = SourceFile::new("big.toml", text);
        let (f, d) = decode(&src);
        (f, d, src)
    }

    #[test]
    fn large_files_are_cut_at_headers() {
        let text = big(20_000, "");
        let ps = pieces(&text);
        assert!(ps.len() > 1, "{} bytes, one piece", text.len());
        for p in &ps[1..] {
            assert!(text[p.clone()].starts_with("[process."));
        }
        let (f, d, _) = check(text);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(f.unwrap().processes.len(), 20_000);
    }

    #[test]
    fn spans_in_later_pieces_point_at_the_right_line() {
        let text = big(20_000, "[process.last]\ncmd = \"oops\"\n");
        let lines = text.lines().count();
        let (_, d, src) = check(text);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(src.line_col(d[0].span.clone().unwrap().start), (lines, 7));
    }

    #[test]
    fn a_table_defined_twice_across_pieces_is_an_error() {
        let text = big(20_000, "[process.p3]\ncmd = [\"true\"]\n");
        let (_, d, src) = check(text.clone());
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].code, Code::TomlSyntax);
        assert_eq!(
            d[0].message,
            "invalid TOML: table `[process.p3]` is defined twice"
        );
        let first = d[0].related[0].0.start;
        assert_eq!(
            src.line_col(first).0,
            2 + 3 * 3,
            "points at the first [process.p3]"
        );
        let line = src.line_col(d[0].span.clone().unwrap().start).0;
        assert_eq!(line, text.lines().count() - 1);
    }

    #[test]
    fn sub_tables_are_never_cut_from_their_table() {
        let text = big(20_000, "[process.p0.env]\nA = \"1\"\n");
        let ps = pieces(&text);
        assert_eq!(ps.len(), 1, "p0 is open until its env table");
        let (f, d, _) = check(text);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(f.unwrap().processes[0].env.len(), 1);
    }

    #[test]
    fn headers_inside_multiline_strings_are_not_headers() {
        let mut text = big(10_000, "");
        text.push_str("[process.s]\nshell = '''\n[process.fake]\ncmd = 1\n'''\n");
        text.push_str(
            &big(10_000, "")
                .replace("[process.p", "[process.q")
                .replace("version = 1\n", ""),
        );
        let (f, d, _) = check(text);
        assert!(d.is_empty(), "{d:?}");
        assert_eq!(f.unwrap().processes.len(), 20_001);
    }

    #[test]
    fn unusual_layouts_are_parsed_whole() {
        let text = big(20_000, "[[process.arr]]\n");
        assert_eq!(pieces(&text).len(), 1);
        let text = format!("process.a.cmd = [\"true\"]\n{}", big(20_000, ""));
        assert_eq!(pieces(&text).len(), 1);
    }
}
