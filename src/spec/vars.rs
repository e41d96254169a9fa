//! Variables: `[vars]`, `--set NAME=VALUE` and `{{ name }}`.
//!
//! File vars are substituted once, while the file is decoded, so `plan`,
//! `graph`, `validate` and every later check see resolved values. What
//! differs per instance stays for the runtime: `{{ replica }}` becomes the
//! existing `{replica}` token, and `{{ item }}` is kept, spelt `{{ item }}`,
//! in a `for_each` process's cmd, shell, env and cwd (see
//! `runtime::spawn::interpolate` and `interpolate_item`). `{{{{` is a literal `{{`.
//!
//! This is a child module of `decode.rs`: it extends the decoder.

use super::*;

/// Names the file may not define: they are built in.
pub const BUILT_INS: &[&str] = &["name", "replica", "item"];

/// Options that come from outside the file (the command line).
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// `--set NAME=VALUE`, in command-line order (the last one wins).
    pub set: Vec<(String, String)>,
}

/// A `[vars]` entry, resolved.
#[derive(Debug, Clone)]
pub(super) struct Var {
    pub name: String,
    /// The name's span.
    pub span: Span,
    /// `None` when it could not be resolved (already reported).
    pub value: Option<String>,
}

/// Keys of a `[vars]` entry written as a table.
const KEYS_VAR: &[&str] = &["env", "default"];

/// Parses `NAME=VALUE` from `--set`.
pub fn parse_set(arg: &str) -> Result<(String, String), String> {
    let Some((name, value)) = arg.split_once('=') else {
        return Err(format!(
            "`{arg}` is not NAME=VALUE; write --set {arg}=value"
        ));
    };
    if !is_valid_name(name) {
        return Err(format!(
            "`{name}` is not a valid var name: names start with a letter or `_`, then letters, digits, `_` or `-`"
        ));
    }
    Ok((name.to_string(), value.to_string()))
}

/// How `{{ item }}` is kept for the runtime.
const ITEM: &str = "{{ item }}";

/// A placeholder found in a string: byte range and the name inside.
fn placeholder(s: &str, at: usize) -> Option<(usize, &str)> {
    let rest = s.get(at + 2..)?;
    let inner = rest.trim_start_matches([' ', '\t']);
    let name_len = inner
        .char_indices()
        .find(|&(i, c)| !(c.is_ascii_alphanumeric() || c == '_' || (i > 0 && c == '-')))
        .map_or(inner.len(), |(i, _)| i);
    let name = &inner[..name_len];
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let after = inner[name_len..].trim_start_matches([' ', '\t']);
    after.starts_with("}}").then(|| {
        let end = s.len() - after.len() + 2;
        (end, name)
    })
}

/// Where the placeholders of one string may be used.
#[derive(Clone, Copy)]
pub(super) struct Context<'a> {
    /// The process, for `{{ name }}`; `None` in `[env]`.
    pub process: Option<&'a str>,
    /// Whether `{{ item }}` is replaced here (a `for_each` process's cmd, shell, env, cwd).
    pub item: bool,
    /// Whether the process has `for_each`.
    pub for_each: bool,
    /// Whether this is the `for_each` list itself.
    pub in_items: bool,
}

impl Decoder {
    /// Decodes `[vars]`, applying `--set` overrides.
    pub(super) fn vars_table(&mut self, v: &Value<'_>, opts: &LoadOptions) {
        let Some(t) = self.table(&"vars", v) else {
            return;
        };
        for (k, v) in t.iter() {
            let name = key_str(k);
            let what = format!("vars.{name}");
            if !is_valid_name(name) {
                self.name("var", k);
                continue;
            }
            if BUILT_INS.contains(&name) {
                self.push(
                    Diagnostic::at(
                        Code::BadName,
                        self.at(k.span()),
                        format!("`{name}` is a built-in var; a file cannot define it"),
                    )
                    .label("built in")
                    .help("`{{ name }}` is the process's name, `{{ replica }}` its replica index, `{{ item }}` its for_each item; pick another name"),
                );
                continue;
            }
            if let Some(first) = self.vars.iter().find(|v| v.name == name) {
                let first = first.span.clone();
                self.defined_twice(&what, self.at(k.span()), first);
                continue;
            }
            let overridden = opts.set.iter().rev().find(|(n, _)| n == name);
            let value = match v.get_ref() {
                DeValue::Table(entry) => self.env_var(&what, entry, v, overridden.is_some()),
                _ => self.scalar(
                    &what,
                    v,
                    "a string, number, boolean or { env = \"NAME\", default = \"…\" }",
                ),
            };
            let value = match overridden {
                Some((_, o)) => Some(o.clone()),
                None => value,
            };
            self.vars.push(Var {
                name: name.to_string(),
                span: self.at(k.span()),
                value,
            });
        }
    }

    /// A string, number or boolean, as text.
    fn scalar(&mut self, what: &str, v: &Value<'_>, expected: &str) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => self.no_nul(&what, s, v.span()).then(|| s.to_string()),
            DeValue::Integer(i) => Some(i.to_string()),
            DeValue::Float(f) => Some(f.as_str().to_string()),
            DeValue::Boolean(b) => Some(b.to_string()),
            _ => {
                self.wrong_type(&what, expected, v, None);
                None
            }
        }
    }

    /// `{ env = "PORT", default = "8080" }`.
    fn env_var(
        &mut self,
        what: &str,
        t: &DeTable<'_>,
        whole: &Value<'_>,
        overridden: bool,
    ) -> Option<String> {
        let EnvVarKeys { env, default, bad } = self.env_var_keys(what, t);
        let Some(env) = env else {
            if !bad {
                self.push(
                    Diagnostic::at(
                        Code::WrongType,
                        self.at(whole.span()),
                        format!("`{what}` as a table needs `env`"),
                    )
                    .label("no `env`")
                    .help("write { env = \"PORT\", default = \"8080\" }, or a plain value"),
                );
            }
            return None;
        };
        if bad || overridden {
            return None;
        }
        self.read_env_var(what, &env, default)
    }

    /// The keys of an `{ env = …, default = … }` table, each checked.
    fn env_var_keys(&mut self, what: &str, t: &DeTable<'_>) -> EnvVarKeys {
        let mut keys = EnvVarKeys {
            env: None,
            default: None,
            bad: false,
        };
        for (k, v) in t.iter() {
            match key_str(k) {
                "env" => {
                    keys.env = self.string(&format!("{what}.env"), v);
                    keys.bad |= keys.env.is_none();
                    if let Some(e) = keys
                        .env
                        .as_ref()
                        .filter(|e| e.value.is_empty() || e.value.contains('='))
                    {
                        self.push(
                            Diagnostic::at(
                                Code::BadName,
                                e.span.clone(),
                                format!("`{}` is not a valid environment variable name", e.value),
                            )
                            .label("invalid name")
                            .help("environment variable names are non-empty and contain no `=`"),
                        );
                        keys.bad = true;
                    }
                }
                "default" => {
                    keys.default =
                        self.scalar(&format!("{what}.default"), v, "a string, number or boolean");
                    keys.bad |= keys.default.is_none();
                }
                _ => self.unknown_key(k, KEYS_VAR, &format!("`{what}`")),
            }
        }
        keys
    }

    /// The variable's value now, else `default`; reported when neither exists.
    fn read_env_var(
        &mut self,
        what: &str,
        env: &Sp<String>,
        default: Option<String>,
    ) -> Option<String> {
        match std::env::var(&env.value) {
            Ok(v) => Some(v),
            Err(std::env::VarError::NotPresent) if default.is_some() => default,
            Err(e) => {
                let why = match e {
                    std::env::VarError::NotPresent => "is not set",
                    std::env::VarError::NotUnicode(_) => "is not UTF-8 text",
                };
                let name = what.trim_start_matches("vars.");
                self.push(
                    Diagnostic::at(
                        Code::UnsetEnvVar,
                        env.span.clone(),
                        format!("var `{name}` reads the environment variable `{}`, which {why}", env.value),
                    )
                    .label(format!("`{}` {why}", env.value))
                    .help(format!(
                        "set {} in the environment, give a default ({name} = {{ env = \"{}\", default = \"…\" }}), or pass --set {name}=VALUE",
                        env.value, env.value
                    )),
                );
                None
            }
        }
    }

    /// Reports each `--set` name that the file does not declare.
    pub(super) fn unknown_overrides(&mut self, declared: &[String], opts: &LoadOptions) {
        let mut seen = Vec::new();
        for (name, _) in &opts.set {
            if declared.iter().any(|d| d == name) || seen.contains(&name) {
                continue;
            }
            seen.push(name);
            let help = match did_you_mean(name, declared.iter().map(String::as_str)) {
                Some(s) => format!("did you mean `--set {s}=…`?"),
                None if declared.is_empty() => {
                    "the file declares no [vars]; --set overrides a var the file declares"
                        .to_string()
                }
                None => format!("the file's vars are: {}", declared.join(", ")),
            };
            self.push(
                Diagnostic::new(
                    Code::UnknownVar,
                    None,
                    format!("--set {name}: the file declares no var `{name}`"),
                )
                .help(help),
            );
        }
    }

    /// The process table with `{{ … }}` substituted in the keys that take
    /// them, or `None` when nothing changes. `text` is the piece being decoded.
    pub(super) fn expand_process<'i>(
        &mut self,
        text: &str,
        name: &str,
        t: &DeTable<'i>,
    ) -> Option<DeTable<'i>> {
        let for_each = t.contains_key("for_each");
        let cx = Context {
            process: Some(name),
            item: for_each,
            for_each,
            in_items: false,
        };
        let mut out: Option<DeTable<'i>> = None;
        for (k, v) in t.iter() {
            let key = key_str(k);
            let deep = match key {
                "cmd" | "shell" | "cwd" | "env" => 1,
                "stdout" | "stderr" | "ready" | "health" | "for_each" => 2,
                _ => 0,
            };
            if deep == 0 {
                continue;
            }
            // The runtime replaces `{{ item }}` in cmd, shell, env and cwd only.
            let cx = Context {
                item: cx.item && deep == 1,
                in_items: key == "for_each",
                ..cx
            };
            if let Some(new) = self.expand_value(text, v, cx, deep) {
                let table = out.get_or_insert_with(|| t.clone());
                if let Some(slot) = table.get_mut(key) {
                    *slot.get_mut() = new;
                }
            }
        }
        out
    }

    /// `[env]` with `{{ … }}` substituted, or `None` when nothing changes.
    pub(super) fn expand_env<'i>(&mut self, text: &str, v: &Value<'i>) -> Option<DeValue<'i>> {
        let cx = Context {
            process: None,
            item: false,
            for_each: false,
            in_items: false,
        };
        self.expand_value(text, v, cx, 1)
    }

    /// Substitutes in strings of `v`, down `depth` levels of tables and arrays.
    fn expand_value<'i>(
        &mut self,
        text: &str,
        v: &Value<'i>,
        cx: Context<'_>,
        depth: u32,
    ) -> Option<DeValue<'i>> {
        match v.get_ref() {
            DeValue::String(s) => self
                .expand_str(text, s, v.span(), cx)
                .map(|new| DeValue::String(std::borrow::Cow::Owned(new))),
            DeValue::Array(items) if depth > 0 => {
                let mut changed = None;
                for (i, item) in items.iter().enumerate() {
                    if let Some(new) = self.expand_value(text, item, cx, depth - 1) {
                        let arr = changed.get_or_insert_with(|| items.clone());
                        *arr.as_mut()[i].get_mut() = new;
                    }
                }
                changed.map(DeValue::Array)
            }
            DeValue::Table(t) if depth > 0 => {
                let mut changed: Option<DeTable<'i>> = None;
                for (k, item) in t.iter() {
                    if let Some(new) = self.expand_value(text, item, cx, depth - 1) {
                        let table = changed.get_or_insert_with(|| t.clone());
                        if let Some(slot) = table.get_mut(key_str(k)) {
                            *slot.get_mut() = new;
                        }
                    }
                }
                changed.map(DeValue::Table)
            }
            _ => None,
        }
    }

    /// One string: `None` when it has no `{{`.
    fn expand_str(&mut self, text: &str, s: &str, span: Span, cx: Context<'_>) -> Option<String> {
        if !s.contains("{{") {
            return None;
        }
        let mut out = String::with_capacity(s.len());
        // Where the runtime replaces `{{ item }}`, it also reads `{{{{` as a
        // literal `{{`: every literal `{{` here (an escape, a var's value, a
        // Go template) is written `{{{{` so that it stays literal.
        let literal = if cx.item { "{{{{" } else { "{{" };
        let mut i = 0;
        while let Some(off) = s[i..].find("{{") {
            let at = i + off;
            out.push_str(&s[i..at]);
            if s[at..].starts_with("{{{{") {
                out.push_str(literal);
                i = at + 4;
                continue;
            }
            let Some((end, name)) = placeholder(s, at) else {
                // Not a placeholder (a Go template, `{{.Field}}`...): literal.
                out.push_str(literal);
                i = at + 2;
                continue;
            };
            i = end;
            match name {
                "replica" if !cx.in_items => out.push_str("{replica}"),
                "item" if cx.item => out.push_str(ITEM),
                "name" if cx.process.is_some() => out.push_str(cx.process.unwrap_or_default()),
                "item" | "name" | "replica" => {
                    let (message, help) = built_in_out_of_place(name, cx);
                    let span = self.inner_span(text, span.clone(), s, at, end);
                    self.push(
                        Diagnostic::at(Code::UnknownVar, span, message)
                            .label("not defined here")
                            .help(help),
                    );
                    out.push_str(&s[at..end]);
                }
                _ => match self.vars.iter().find(|v| v.name == name) {
                    Some(v) => match v.value.as_deref() {
                        Some(value) if cx.item => out.push_str(&value.replace("{{", literal)),
                        Some(value) => out.push_str(value),
                        None => out.push_str(&s[at..end]),
                    },
                    None => {
                        let help = self.unknown_var_help(name);
                        let span = self.inner_span(text, span.clone(), s, at, end);
                        self.push(
                            Diagnostic::at(Code::UnknownVar, span, format!("unknown var `{name}`"))
                                .label("not declared in [vars]")
                                .help(help),
                        );
                        out.push_str(&s[at..end]);
                    }
                },
            }
        }
        out.push_str(&s[i..]);
        Some(out)
    }

    /// A near var or built-in name, else how to declare one or write a literal `{{`.
    fn unknown_var_help(&self, name: &str) -> String {
        let names: Vec<&str> = self
            .vars
            .iter()
            .map(|v| v.name.as_str())
            .chain(BUILT_INS.iter().copied())
            .collect();
        match did_you_mean(name, names.iter().copied()) {
            Some(c) => format!("did you mean `{{{{ {c} }}}}`?"),
            None => format!(
                "declare it in [vars]: {name} = \"…\"; for a literal `{{{{`, write `{{{{{{{{`"
            ),
        }
    }

    /// The span of `s[start..end]` inside the TOML string at `span` (piece
    /// offsets): found in the raw text, else the whole string.
    fn inner_span(&self, text: &str, span: Span, s: &str, start: usize, end: usize) -> Span {
        let needle = &s[start..end];
        let nth = s[..start].matches(needle).count();
        let found = text
            .get(span.clone())
            .and_then(|raw| raw.match_indices(needle).nth(nth))
            .map(|(pos, _)| span.start + pos..span.start + pos + needle.len());
        self.at(found.unwrap_or(span))
    }
}

/// An `{ env = …, default = … }` table's keys; `bad` once one was reported.
struct EnvVarKeys {
    env: Option<Sp<String>>,
    default: Option<String>,
    bad: bool,
}

/// Message and help for `{{ item }}` or `{{ name }}` where it has no value.
fn built_in_out_of_place(name: &str, cx: Context<'_>) -> (String, String) {
    if cx.in_items {
        (
            format!("`{{{{ {name} }}}}` cannot be used inside `for_each`: each item is what defines an instance"),
            "write each item out, or build the list from a var: for_each = [\"{{ v }}-a\"]"
                .to_string(),
        )
    } else if name == "item" && cx.for_each {
        (
            "`{{ item }}` is not replaced in output file paths and probes".to_string(),
            "use it in cmd, shell, env or cwd; output files and probes are shared by the instances"
                .to_string(),
        )
    } else if name == "item" {
        (
            "`{{ item }}` is only defined in a process with `for_each`".to_string(),
            "add for_each = [\"a\", \"b\"] to the process, or declare a var".to_string(),
        )
    } else {
        (
            "`{{ name }}` is the process's name, which [env] does not have".to_string(),
            "use it in a process's own `env`, or read $JOBGRAPH_NAME".to_string(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_names_in_double_braces() {
        assert_eq!(placeholder("{{ a }}", 0), Some((7, "a")));
        assert_eq!(placeholder("x{{b-c}}y", 1), Some((8, "b-c")));
        assert_eq!(placeholder("{{.State}}", 0), None);
        assert_eq!(placeholder("{{ a b }}", 0), None);
        assert_eq!(placeholder("{{ a", 0), None);
        assert_eq!(placeholder("{{", 0), None);
    }

    #[test]
    fn set_needs_name_and_value() {
        assert_eq!(parse_set("a=b=c"), Ok(("a".into(), "b=c".into())));
        assert!(parse_set("a").is_err());
        assert!(parse_set("9=x").is_err());
    }
}
