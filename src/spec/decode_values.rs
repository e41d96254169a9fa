//! Readers of single values (strings, integers, durations, names, ...), each
//! reporting a wrong type or value with the key's dotted name.
//!
//! This is a child module of `decode.rs`.

use super::*;

fn type_name(v: &DeValue<'_>) -> &'static str {
    match v {
        DeValue::String(_) => "a string",
        DeValue::Integer(_) => "an integer",
        DeValue::Float(_) => "a float",
        DeValue::Boolean(_) => "a boolean",
        DeValue::Datetime(_) => "a date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

impl Decoder {
    pub(super) fn unknown_key(&mut self, key: &Key<'_>, allowed: &[&str], context: &str) {
        let name = key_str(key);
        let help = match alias(name, allowed) {
            Some(s) => format!("did you mean `{s}`? (jobgraph's name for `{name}`)"),
            None => match did_you_mean(name, allowed.iter().copied()) {
                Some(s) => format!("did you mean `{s}`?"),
                None => format!("{context} takes: {}", allowed.join(", ")),
            },
        };
        self.push(
            Diagnostic::at(
                Code::UnknownKey,
                self.at(key.span()),
                format!("unknown key `{name}` in {context}"),
            )
            .label("unknown key")
            .help(help),
        );
    }

    /// `[process.NAME.OTHER]`: a table that a process does not have, often a
    /// process declared inside another by mistake.
    pub(super) fn unknown_table(&mut self, key: &Key<'_>, process: &str) {
        let name = key_str(key);
        let help = match did_you_mean(name, PROCESS_TABLES.iter().copied()) {
            Some(s) if strsim::jaro_winkler(name, s) >= 0.9 => format!("did you mean `{s}`?"),
            _ => format!(
                "a process's tables are {}; to declare another process, write [process.{name}]",
                PROCESS_TABLES.join(", ")
            ),
        };
        self.push(
            Diagnostic::at(
                Code::UnknownKey,
                self.at(key.span()),
                format!("unknown table `{name}` in process `{process}`"),
            )
            .label("unknown table")
            .help(help),
        );
    }

    pub(super) fn wrong_type(
        &mut self,
        what: &dyn std::fmt::Display,
        expected: &str,
        v: &Value<'_>,
        help: Option<String>,
    ) {
        self.push(
            Diagnostic::at(
                Code::WrongType,
                self.at(v.span()),
                format!(
                    "`{what}` must be {expected}, not {}",
                    type_name(v.get_ref())
                ),
            )
            .label(format!("expected {expected}"))
            .maybe_help(help),
        );
    }

    pub(super) fn table<'a, 'i>(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &'a Value<'i>,
    ) -> Option<&'a DeTable<'i>> {
        match v.get_ref() {
            DeValue::Table(t) => Some(t),
            _ => {
                self.wrong_type(what, "a table", v, None);
                None
            }
        }
    }

    /// Reports a NUL character, which no argv, environment or path can hold.
    pub(super) fn no_nul(&mut self, what: &dyn std::fmt::Display, s: &str, span: Span) -> bool {
        if !s.contains('\0') {
            return true;
        }
        self.push(
            Diagnostic::at(
                Code::NulCharacter,
                self.at(span),
                format!("`{what}` contains a NUL character"),
            )
            .label("NUL (\\u0000) in this string")
            .help("remove the \\u0000: command lines, environment variables, paths and names cannot hold a NUL byte"),
        );
        false
    }

    pub(super) fn string(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
    ) -> Option<Sp<String>> {
        match v.get_ref() {
            DeValue::String(s) => self
                .no_nul(what, s, v.span())
                .then(|| Sp::new(s.to_string(), self.at(v.span()))),
            _ => {
                self.wrong_type(what, "a string", v, None);
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<bool> {
        match v.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                let help = match v.get_ref() {
                    DeValue::String(s) if matches!(s.as_ref(), "true" | "yes" | "on") => {
                        Some(format!("write {} = true, without quotes", last_key(what)))
                    }
                    DeValue::String(s) if matches!(s.as_ref(), "false" | "no" | "off") => {
                        Some(format!("write {} = false, without quotes", last_key(what)))
                    }
                    _ => None,
                };
                self.wrong_type(what, "true or false", v, help);
                None
            }
        }
    }

    /// An integer in `min..=max`; out of range is reported under `code`.
    pub(super) fn int(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
        code: Code,
        min: i64,
        max: i64,
    ) -> Option<i64> {
        let n = match v.get_ref() {
            DeValue::Integer(i) => i64::from_str_radix(i.as_str(), i.radix()).ok(),
            _ => {
                self.wrong_type(what, "an integer", v, None);
                return None;
            }
        };
        match n {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                let shown = match v.get_ref() {
                    DeValue::Integer(i) => i.to_string(),
                    _ => String::new(),
                };
                self.push(
                    Diagnostic::at(
                        code,
                        self.at(v.span()),
                        format!("`{what}` is {shown}, but it must be between {min} and {max}"),
                    )
                    .label("out of range"),
                );
                None
            }
        }
    }

    pub(super) fn strings(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
        help: &dyn Fn() -> Option<String>,
    ) -> Option<Vec<Sp<String>>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(what, "an array of strings", v, help());
            return None;
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.get_ref() {
                DeValue::String(s) => {
                    if !self.no_nul(&format!("{what}[{i}]"), s, item.span()) {
                        return None;
                    }
                    out.push(Sp::new(s.to_string(), self.at(item.span())))
                }
                _ => {
                    self.wrong_type(&format!("{what}[{i}]"), "a string", item, None);
                    return None;
                }
            }
        }
        Some(out)
    }

    /// A list of names: an array of strings, each at most once. A bare string is
    /// reported with its fix and then taken as a one-element list, so that
    /// later checks do not pile up errors that the fix would also remove.
    pub(super) fn names(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
        help: &dyn Fn() -> Option<String>,
    ) -> Vec<Sp<String>> {
        let list = match v.get_ref() {
            DeValue::String(s) => {
                self.wrong_type(what, "an array of strings", v, help());
                vec![Sp::new(s.to_string(), self.at(v.span()))]
            }
            _ => self.strings(what, v, help).unwrap_or_default(),
        };
        let mut out: Vec<Sp<String>> = Vec::with_capacity(list.len());
        for item in list {
            if let Some(first) = out.iter().find(|o| o.value == item.value) {
                let first = first.span.clone();
                self.push(
                    Diagnostic::at(
                        Code::DuplicateReference,
                        item.span.clone(),
                        format!("`{}` is listed twice in `{what}`", item.value),
                    )
                    .label("listed again")
                    .related(first, "first listed here")
                    .help("remove the repeated name"),
                );
            } else {
                out.push(item);
            }
        }
        out
    }

    pub(super) fn duration(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
        allow_zero: bool,
    ) -> Option<Duration> {
        let text = match v.get_ref() {
            DeValue::String(s) => s.as_ref(),
            DeValue::Integer(i) => {
                let help = format!(
                    "durations are strings with a unit: {} = \"{i}s\"",
                    last_key(what)
                );
                self.wrong_type(what, "a duration string", v, Some(help));
                return None;
            }
            _ => {
                self.wrong_type(what, "a duration string", v, None);
                return None;
            }
        };
        let problem = match parse_duration(text) {
            Ok(d) if d.is_zero() && !allow_zero => "it must be longer than zero".to_string(),
            Ok(d) => return Some(d),
            Err(e) => e,
        };
        let help = if problem.contains("maximum") {
            "durations are at most \"3650d\" (about 10 years); write a shorter one, or leave the key out for its default"
        } else {
            "write a number and a unit: \"250ms\", \"10s\", \"5m\", \"1h30m\""
        };
        self.push(
            Diagnostic::at(
                Code::BadDuration,
                self.at(v.span()),
                format!("`{what}` is not a valid duration: {problem}"),
            )
            .label("invalid duration")
            .help(help),
        );
        None
    }

    /// One of `choices`; returns its index.
    pub(super) fn choice(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
        choices: &[&str],
    ) -> Option<usize> {
        let s = self.string(what, v)?;
        if let Some(i) = choices.iter().position(|c| *c == s.value) {
            return Some(i);
        }
        let list = choices
            .iter()
            .map(|c| format!("\"{c}\""))
            .collect::<Vec<_>>()
            .join(", ");
        let help = match did_you_mean(&s.value, choices.iter().copied()) {
            Some(c) => format!("did you mean \"{c}\"?"),
            None => format!("use one of {list}"),
        };
        self.push(
            Diagnostic::at(
                Code::UnknownValue,
                s.span,
                format!("`{what}` cannot be \"{}\"; it is one of {list}", s.value),
            )
            .label("unknown value")
            .help(help),
        );
        None
    }

    pub(super) fn name(&mut self, kind: &str, key: &Key<'_>) -> Sp<String> {
        let name = key_str(key);
        if !is_valid_name(name) {
            let fixed: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let fixed = match fixed.chars().next() {
                Some(c) if c.is_ascii_alphabetic() || c == '_' => fixed,
                _ => format!("_{fixed}"),
            };
            self.push(
                Diagnostic::at(Code::BadName, self.at(key.span()), format!("`{name}` is not a valid {kind} name"))
                    .label("invalid name")
                    .help(format!(
                        "names start with a letter or `_`, then letters, digits, `_` or `-`: try `{fixed}`"
                    )),
            );
        }
        Sp::new(name.to_string(), self.at(key.span()))
    }

    pub(super) fn env(
        &mut self,
        what: &dyn std::fmt::Display,
        t: &DeTable<'_>,
    ) -> Vec<(Sp<String>, Sp<String>)> {
        let mut out = Vec::with_capacity(t.len());
        for (k, v) in t.iter() {
            let name = key_str(k);
            if name.is_empty() || name.contains('=') || name.contains('\0') {
                self.push(
                    Diagnostic::at(
                        Code::BadName,
                        self.at(k.span()),
                        format!("`{name}` is not a valid environment variable name"),
                    )
                    .label("invalid name")
                    .help("environment variable names are non-empty and contain no `=` and no NUL character"),
                );
                continue;
            }
            let value = match v.get_ref() {
                DeValue::String(s) => {
                    if !self.no_nul(&format!("{what}.{name}"), s, v.span()) {
                        continue;
                    }
                    s.to_string()
                }
                DeValue::Integer(i) => i.to_string(),
                DeValue::Float(f) => f.as_str().to_string(),
                DeValue::Boolean(b) => b.to_string(),
                _ => {
                    self.wrong_type(
                        &format!("{what}.{name}"),
                        "a string, number or boolean",
                        v,
                        None,
                    );
                    continue;
                }
            };
            out.push((
                Sp::new(name.to_string(), self.at(k.span())),
                Sp::new(value, self.at(v.span())),
            ));
        }
        out
    }
}
