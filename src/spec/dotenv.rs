//! The dotenv format of `env_file`, parsed here rather than with `dotenvy`
//! 0.15, which read `$DB_HOST` as `$DB` then `_HOST` and rejected `"x $A"`.
//!
//! One `NAME=value` per line; blank lines and `#` comments; an optional
//! `export ` prefix. A value is
//! - unquoted: up to the end of the line or a ` #` comment, trimmed; a
//!   backslash escapes the next character; it may not hold a blank;
//! - in single quotes: literal, and may span lines;
//! - in double quotes: `\\`, `\"`, `\$`, `\n`, `\t` escapes, and may span lines.
//!
//! `$NAME` and `${NAME}` (letters, digits, `_`) in unquoted and double-quoted
//! values are replaced by an earlier line's value, else the environment's,
//! else nothing.

/// A line that is not dotenv: its number (from 1) and text.
#[derive(Debug, PartialEq, Eq)]
pub struct BadLine {
    /// Its number, from 1.
    pub number: usize,
    /// Its text.
    pub text: String,
}

/// The variables of a dotenv text, in order, with `$NAME` expanded from
/// earlier lines, then from `env`.
pub fn parse(
    text: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, BadLine> {
    // Editors on Windows start a UTF-8 file with a byte-order mark.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let lines: Vec<&str> = text.lines().collect();
    let mut out: Vec<(String, String)> = Vec::new();
    let mut n = 0;
    while n < lines.len() {
        let first = n;
        let bad = || BadLine {
            number: first + 1,
            text: lines[first].to_string(),
        };
        let line = lines[n].trim_start();
        n += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let Some((name, rest)) = line.split_once('=') else {
            return Err(bad());
        };
        let name = name.trim_end();
        let valid_name = name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.');
        if !valid_name {
            return Err(bad());
        }
        let lookup = |k: &str| {
            out.iter()
                .rev()
                .find(|(name, _)| name == k)
                .map(|(_, v)| v.clone())
                .or_else(|| env(k))
                .unwrap_or_default()
        };
        let rest = rest.trim_start();
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                // The value runs to the closing quote, over lines if it must.
                let mut body = rest[1..].to_string();
                let close = loop {
                    if let Some(at) = closing_quote(&body, q) {
                        break at;
                    }
                    let Some(next) = lines.get(n) else {
                        return Err(bad());
                    };
                    n += 1;
                    body.push('\n');
                    body.push_str(next);
                };
                let after = body[close + 1..].trim_start();
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err(bad());
                }
                let inner = &body[..close];
                if q == '\'' {
                    inner.to_string()
                } else {
                    expand(inner, true, &lookup).ok_or_else(bad)?
                }
            }
            _ => {
                let raw = match rest.find(" #").or_else(|| rest.find("\t#")) {
                    Some(at) => &rest[..at],
                    None => rest,
                };
                let raw = raw.trim_end();
                if raw.starts_with('#') {
                    String::new()
                } else {
                    if unescaped_blank(raw) {
                        return Err(bad());
                    }
                    expand(raw, false, &lookup).ok_or_else(bad)?
                }
            }
        };
        out.push((name.to_string(), value));
    }
    Ok(out)
}

/// Whether an unquoted value holds a blank that no backslash escapes.
fn unescaped_blank(raw: &str) -> bool {
    let mut escaped = false;
    for c in raw.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            ' ' | '\t' => return true,
            _ => {}
        }
    }
    false
}

/// Where the unescaped closing `q` is in `body`.
fn closing_quote(body: &str, q: char) -> Option<usize> {
    let mut escaped = false;
    for (at, c) in body.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if q == '"' => escaped = true,
            c if c == q => return Some(at),
            _ => {}
        }
    }
    None
}

/// Escapes and `$NAME` / `${NAME}` of an unquoted (`quoted` false) or
/// double-quoted value; `None` for a bad escape or an unclosed `${`.
fn expand(raw: &str, quoted: bool, lookup: &dyn Fn(&str) -> String) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.next()? {
                'n' if quoted => out.push('\n'),
                't' if quoted => out.push('\t'),
                c @ ('\\' | '"' | '\'' | '$' | ' ' | '#') => out.push(c),
                c if !quoted => out.push(c),
                _ => return None,
            },
            '$' => match chars.peek() {
                Some('{') => {
                    chars.next();
                    let mut name = String::new();
                    loop {
                        match chars.next()? {
                            '}' => break,
                            c => name.push(c),
                        }
                    }
                    out.push_str(&lookup(&name));
                }
                Some(&c) if c.is_ascii_alphanumeric() || c == '_' => {
                    let mut name = String::new();
                    while let Some(&c) = chars.peek() {
                        if !(c.is_ascii_alphanumeric() || c == '_') {
                            break;
                        }
                        name.push(c);
                        chars.next();
                    }
                    out.push_str(&lookup(&name));
                }
                _ => out.push('$'),
            },
            c => out.push(c),
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(text: &str) -> Result<Vec<(String, String)>, BadLine> {
        parse(text, &|k| (k == "HOME").then(|| "/home/u".to_string()))
    }

    fn one(text: &str) -> String {
        match vars(text) {
            Ok(v) => v.last().map(|(_, v)| v.clone()).unwrap_or_default(),
            Err(e) => panic!("{text:?}: bad line {e:?}"),
        }
    }

    #[test]
    fn values_quotes_and_expansion() {
        let host = "DB_HOST=db.local\n";
        for (text, want) in [
            ("A=plain", "plain"),
            ("export A=plain", "plain"),
            ("A = spaced ", "spaced"),
            ("A=x # comment", "x"),
            ("A=x#not-a-comment", "x#not-a-comment"),
            ("A=", ""),
            ("A='single $HOME \\n'", "single $HOME \\n"),
            ("A=\"double $HOME\"", "double /home/u"),
            ("A=\"a \\\"b\\\" \\$HOME \\n\"", "a \"b\" $HOME \n"),
            ("A=\"line one\nline two\"", "line one\nline two"),
            ("A='x' # comment", "x"),
            ("A=$UNSET-x", "-x"),
            ("A=cost$", "cost$"),
            ("A=${HOME}/x", "/home/u/x"),
            ("A=\\ lead", " lead"),
            ("\u{feff}A=bom", "bom"),
        ] {
            assert_eq!(one(text), want, "{text:?}");
        }
        for (text, want) in [
            ("URL=pg://$DB_HOST/x", "pg://db.local/x"),
            ("URL=\"pg://$DB_HOST\"", "pg://db.local"),
            ("URL=\"x $DB_HOST\"", "x db.local"),
            ("URL=\"${DB_HOST}\"", "db.local"),
            ("URL=x$DB_HOST", "xdb.local"),
        ] {
            assert_eq!(one(&format!("{host}{text}")), want, "{text:?}");
        }
    }

    #[test]
    fn a_bad_line_is_named_by_number() {
        for (text, number) in [
            ("A=1\nnot a pair\n", 2),
            ("A=two words", 1),
            ("A='unclosed\nB=1", 1),
            ("A=\"x\" trailing", 1),
            ("1A=x", 1),
            ("A=\"bad \\q escape\"", 1),
            ("A=${UNCLOSED", 1),
            ("\n\n# c\n=x", 4),
        ] {
            assert_eq!(vars(text).map_err(|e| e.number), Err(number), "{text:?}");
        }
    }
}
