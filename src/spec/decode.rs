//! TOML text to [`JobFile`], checking each value on its own.
//!
//! The walk is by hand over toml's spanned document rather than through
//! `#[derive(Deserialize)]`: serde stops at the first error and loses spans of
//! keys, while users want every problem at once, each with a line, a column and
//! a "did you mean".

use super::*;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::SourceFile;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

type Span = std::ops::Range<usize>;

/// Keys allowed at the top level.
pub const KEYS_TOP: &[&str] = &[
    "version", "graph", "env", "lock", "process", "queue", "pipe", "vars", "include", "slurm",
];
/// Keys of `[graph]`.
pub const KEYS_GRAPH: &[&str] = &[
    "name",
    "max_parallel",
    "shutdown_grace",
    "fail_fast",
    "env_file",
    "executor",
];
/// Keys of `[lock.NAME]`.
pub const KEYS_LOCK: &[&str] = &["capacity"];
/// Keys of `[process.NAME]`.
pub const KEYS_PROCESS: &[&str] = &[
    "cmd",
    "shell",
    "cwd",
    "env",
    "start",
    "after",
    "parent",
    "daemon",
    "replicas",
    "ready",
    "timeout",
    "retries",
    "retry_delay",
    "restart",
    "max_restarts",
    "locks",
    "stop_signal",
    "success_codes",
    "stdin",
    "stdout",
    "stderr",
    "always",
    "for_each",
    "tty",
    "health",
    "env_file",
    "slurm",
];
/// Keys of a process's `ready` table.
pub const KEYS_READY: &[&str] = &[
    "tcp", "cmd", "log", "file", "http", "status", "interval", "timeout",
];
/// Keys of a process's `health` table.
pub const KEYS_HEALTH: &[&str] = &[
    "tcp", "cmd", "file", "http", "status", "interval", "failures",
];
/// Keys of `[queue.NAME]`.
pub const KEYS_QUEUE: &[&str] = &["from", "to", "capacity", "mode", "framing"];
/// Keys of `[pipe.NAME]`.
pub const KEYS_PIPE: &[&str] = &["from", "to", "between"];

const CONDITIONS: &[&str] = &["success", "exit", "ready", "start"];
const MAX_REPLICAS: i64 = 65_536;
const MAX_QUEUE_CAPACITY: i64 = 16 * 1024 * 1024;
const MAX_COUNT: i64 = 1_000_000;

type Value<'i> = Spanned<DeValue<'i>>;

#[path = "env_file.rs"]
mod env_file;
#[path = "include.rs"]
pub(crate) mod include;
#[path = "slurm_decode.rs"]
mod slurm_decode;
#[path = "vars.rs"]
pub(crate) mod vars;
pub use slurm_decode::{KEYS_PROCESS_SLURM, KEYS_SLURM};
use vars::LoadOptions;

fn is_signal_name(text: &str) -> bool {
    use std::str::FromStr;
    let full = if text.starts_with("SIG") {
        text.to_string()
    } else {
        format!("SIG{text}")
    };
    nix::sys::signal::Signal::from_str(&full).is_ok()
}

/// Names other tools use (docker compose, process-compose, GitHub Actions,
/// systemd, Kubernetes...) for jobgraph's keys: (their name, jobgraph's name).
const ALIASES: &[(&str, &str)] = &[
    ("depends_on", "after"),
    ("depends", "after"),
    ("dependencies", "after"),
    ("deps", "after"),
    ("needs", "after"),
    ("requires", "after"),
    ("wait_for", "after"),
    ("command", "cmd"),
    ("args", "cmd"),
    ("argv", "cmd"),
    ("entrypoint", "cmd"),
    ("exec", "cmd"),
    ("program", "cmd"),
    ("script", "shell"),
    ("run", "shell"),
    ("working_dir", "cwd"),
    ("workdir", "cwd"),
    ("working_directory", "cwd"),
    ("dir", "cwd"),
    ("directory", "cwd"),
    ("environment", "env"),
    ("readiness_probe", "ready"),
    ("healthcheck", "ready"),
    ("health_check", "ready"),
    ("is_daemon", "daemon"),
    ("background", "daemon"),
    ("scale", "replicas"),
    ("instances", "replicas"),
    ("restart_policy", "restart"),
    ("max_retries", "retries"),
    ("retry", "retries"),
    ("backoff", "retry_delay"),
    ("signal", "stop_signal"),
    ("exit_codes", "success_codes"),
    ("parallelism", "max_parallel"),
    ("concurrency", "max_parallel"),
    ("jobs", "max_parallel"),
    ("shutdown_timeout", "shutdown_grace"),
    ("stop_grace_period", "shutdown_grace"),
    ("producers", "from"),
    ("consumers", "to"),
    ("size", "capacity"),
    ("maxsize", "capacity"),
];

/// jobgraph's key for a key another tool uses, when this table has it.
fn alias(name: &str, allowed: &[&str]) -> Option<&'static str> {
    let lower = name.to_ascii_lowercase().replace('-', "_");
    ALIASES
        .iter()
        .find(|(theirs, ours)| *theirs == lower && allowed.contains(ours))
        .map(|(_, ours)| *ours)
}

/// Keys of a process that take a table.
const PROCESS_TABLES: &[&str] = &[
    "env", "ready", "after", "stdout", "stderr", "health", "slurm",
];

/// The last component of a dotted name: what the user writes inside the table.
fn last_key(what: &dyn std::fmt::Display) -> String {
    let s = what.to_string();
    s.rsplit('.').next().unwrap_or(&s).to_string()
}

/// `prefix.key`, formatted only when a message needs it.
struct Dotted<'a>(&'a str, &'a str);

impl std::fmt::Display for Dotted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}
type Key<'i> = Spanned<std::borrow::Cow<'i, str>>;

/// Decodes a job file. `None` when the TOML itself does not parse; otherwise
/// the model, with every invalid value replaced by its default and reported.
pub fn decode(source: &SourceFile) -> (Option<JobFile>, Vec<Diagnostic>) {
    decode_with(source, &LoadOptions::default())
}

/// [`decode`] with options from the command line (`--set`).
pub fn decode_with(source: &SourceFile, opts: &LoadOptions) -> (Option<JobFile>, Vec<Diagnostic>) {
    let mut d = Decoder {
        diags: Vec::new(),
        offset: 0,
        seen: Default::default(),
        vars: Vec::new(),
        base: source.base_dir(),
        graph_env_file: Vec::new(),
        part: 0..source.text().len(),
    };
    let mut file = JobFile::default();
    let parts = source.parts();
    if parts.len() > 1 {
        // Vars of every file first: a file may use the vars of another.
        for part in parts {
            let text = &source.text()[part.range.clone()];
            for piece in pieces(text) {
                d.offset = part.range.start + piece.start;
                if let Ok(root) = DeTable::parse(&text[piece.clone()]) {
                    if let Some(v) = root.get_ref().get("vars") {
                        d.vars_table(v, opts);
                    }
                }
            }
        }
    }
    for (index, part) in parts.iter().enumerate() {
        let text = &source.text()[part.range.clone()];
        d.enter_part(index, part, source);
        for piece in pieces(text) {
            d.offset = part.range.start + piece.start;
            let root = match DeTable::parse(&text[piece.clone()]) {
                Ok(root) => root,
                Err(err) => {
                    let span = err.span().unwrap_or(0..0);
                    let span = span.start + piece.start..span.end + piece.start;
                    let message = err.message().trim().to_string();
                    let diag = syntax_error(text, span, &message);
                    return (None, vec![include::shift(diag, part.range.start)]);
                }
            };
            if parts.len() == 1 {
                if let Some(v) = root.get_ref().get("vars") {
                    d.vars_table(v, opts);
                }
            }
            d.file(root.into_inner(), &mut file, &text[piece.clone()]);
        }
    }
    let declared: Vec<String> = d.vars.iter().map(|v| v.name.clone()).collect();
    d.unknown_overrides(&declared, opts);
    file.env.splice(0..0, std::mem::take(&mut d.graph_env_file));
    if file.processes.is_empty() && !d.diags.iter().any(|x| x.is_error()) {
        d.diags.push(
            Diagnostic::new(Code::EmptyGraph, None, "the file declares no process")
                .help("add a process, e.g. [process.hello] with cmd = [\"echo\", \"hello\"]"),
        );
    }
    (Some(file), d.diags)
}

/// A TOML syntax error in words a user recognises: an unclosed string where
/// it starts (the parser notices it only later), and both places of a table
/// or key defined twice.
fn syntax_error(text: &str, span: Span, message: &str) -> Diagnostic {
    if let Some(quote) = unclosed_string(text).filter(|&q| q <= span.start) {
        let q = &text[quote..quote + 1];
        return Diagnostic::at(Code::TomlSyntax, quote..quote + 1, "invalid TOML: unclosed string")
            .label("this string is not closed on its line")
            .help(format!(
                "add the closing {q} before the end of the line; a string that spans lines is written with triple quotes ({q}{q}{q})"
            ));
    }
    let plain = || {
        Diagnostic::at(
            Code::TomlSyntax,
            span.clone(),
            format!("invalid TOML: {message}"),
        )
        .label(message.to_string())
    };
    if message != "duplicate key" {
        return plain();
    }
    let line_start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let line_end = text[line_start..]
        .find('\n')
        .map_or(text.len(), |i| line_start + i);
    let line = &text[line_start..line_end];
    let squash = |l: &str| -> String {
        l.split('#')
            .next()
            .unwrap_or("")
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect()
    };
    let trimmed = line.trim_start();
    if trimmed.starts_with('[') {
        // A table header defined twice: find the first one.
        let header = squash(line);
        let mut pos = 0;
        for l in text[..line_start].split_inclusive('\n') {
            if squash(l) == header {
                let at = pos + (l.len() - l.trim_start().len());
                let shown = header.trim_start_matches('[').trim_end_matches(']');
                return Diagnostic::at(
                    Code::TomlSyntax,
                    line_start + (line.len() - trimmed.len())..line_end,
                    format!("invalid TOML: table `[{shown}]` is defined twice"),
                )
                .label("defined again here")
                .related(
                    at..at + l.trim_end().len() - (l.len() - l.trim_start().len()),
                    "first defined here",
                )
                .help("merge the two tables into one; a table header may appear only once");
            }
            pos += l.len();
        }
        return plain();
    }
    // A key defined twice in one table: look back to the table's header.
    let Some(key) = text.get(span.clone()).filter(|k| !k.is_empty()) else {
        return plain();
    };
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
                return Diagnostic::at(
                    Code::TomlSyntax,
                    span.clone(),
                    format!("invalid TOML: `{key}` is defined twice in one table"),
                )
                .label("defined again here")
                .related(at..at + key.len(), "first defined here")
                .help("keep one of the two; a key may appear only once per table");
            }
        }
    }
    plain()
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
pub(crate) fn pieces(text: &str) -> Vec<std::ops::Range<usize>> {
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

/// What a probe table holds (`ready` or `health`).
#[derive(Default)]
struct ProbeTable {
    probe: Option<Sp<Probe>>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    failures: Option<u32>,
}

struct Decoder {
    diags: Vec<Diagnostic>,
    /// Where the piece being decoded starts in the file (see [`pieces`]).
    offset: usize,
    /// Tables already decoded from earlier pieces, to catch redefinitions across pieces.
    seen: rustc_hash::FxHashMap<String, std::ops::Range<usize>>,
    /// `[vars]`, resolved (see vars.rs).
    vars: Vec<vars::Var>,
    /// The job file's directory, for `env_file` paths.
    base: std::path::PathBuf,
    /// `[graph] env_file` variables, put before `[env]` at the end.
    graph_env_file: Vec<(Sp<String>, Sp<String>)>,
    /// The byte range of the file being decoded (the main file, or an included one).
    part: std::ops::Range<usize>,
}

fn key_str<'a>(k: &'a Key<'_>) -> &'a str {
    k.get_ref().as_ref()
}

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
    /// A span of the current piece, as a span of the whole file.
    fn at(&self, span: std::ops::Range<usize>) -> std::ops::Range<usize> {
        span.start + self.offset..span.end + self.offset
    }

    /// Reports a table defined twice, in two pieces; within one piece, toml reports it.
    fn first_definition(&mut self, what: String, span: std::ops::Range<usize>) -> bool {
        let first = match self.seen.entry(what) {
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(span);
                return true;
            }
            std::collections::hash_map::Entry::Occupied(o) => (o.key().clone(), o.get().clone()),
        };
        let (what, first) = first;
        if first.start < self.part.start {
            self.defined_twice(&what, span, first);
            return false;
        }
        self.push(
            Diagnostic::at(
                Code::TomlSyntax,
                span,
                if what == "version" {
                    "invalid TOML: `version` is defined twice".to_string()
                } else {
                    format!("invalid TOML: table `[{what}]` is defined twice")
                },
            )
            .label("defined again here")
            .related(first, "first defined here")
            .help("merge the two tables into one; a table header may appear only once"),
        );
        false
    }

    fn push(&mut self, d: Diagnostic) {
        self.diags.push(d);
    }

    fn unknown_key(&mut self, key: &Key<'_>, allowed: &[&str], context: &str) {
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
    fn unknown_table(&mut self, key: &Key<'_>, process: &str) {
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

    fn wrong_type(
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

    fn table<'a, 'i>(
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
    fn no_nul(&mut self, what: &dyn std::fmt::Display, s: &str, span: Span) -> bool {
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

    fn string(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Sp<String>> {
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

    fn boolean(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<bool> {
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
    fn int(
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

    fn strings(
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
    fn names(
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

    fn duration(
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
    fn choice(
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

    fn name(&mut self, kind: &str, key: &Key<'_>) -> Sp<String> {
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

    fn env(
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

    /// Consumes the document table by table, so that a large file's parsed
    /// form is freed while the model is built rather than held until the end.
    fn file(&mut self, root: DeTable<'_>, file: &mut JobFile, text: &str) {
        for (k, v) in root {
            let k = &k;
            if matches!(
                key_str(k),
                "version" | "graph" | "env" | "vars" | "include" | "slurm"
            ) && !self.first_definition(key_str(k).to_string(), self.at(k.span()))
            {
                continue;
            }
            match key_str(k) {
                "version" => {
                    let ok = matches!(v.get_ref(), DeValue::Integer(i) if i.as_str() == "1" && i.radix() == 10);
                    if !ok {
                        self.push(
                            Diagnostic::at(
                                Code::UnsupportedVersion,
                                self.at(v.span()),
                                "this jobgraph reads version 1 files only",
                            )
                            .label("unsupported version")
                            .help("write version = 1, or remove the line"),
                        );
                    }
                }
                "include" if matches!(v.get_ref(), DeValue::Table(_)) => {
                    let help =
                        Some("write include = [\"common.toml\"] at the top of the file".into());
                    self.wrong_type(&"include", "an array of paths", &v, help);
                }
                "vars" | "include" => {} // decoded first, by vars_table / include.rs
                "graph" | "slurm" if self.part.start > 0 => self.graph_in_include(k),
                "slurm" => {
                    if let Some(t) = self.table(&"slurm", &v) {
                        file.slurm = self.slurm_settings(t);
                    }
                }
                "graph" => {
                    if let Some(t) = self.table(&"graph", &v) {
                        file.graph = self.graph(t);
                        if let Some(ef) = t.get("env_file") {
                            self.graph_env_file = self.env_file("graph.env_file", ef);
                        }
                    }
                }
                "env" => {
                    let v = match self.expand_env(text, &v) {
                        Some(new) => Spanned::new(v.span(), new),
                        None => v,
                    };
                    if let Some(t) = self.table(&"env", &v) {
                        let env = self.env(&"env", t);
                        self.merge_env(&mut file.env, env);
                    }
                }
                "lock" => self.each_named("lock", v, |d, name, t| {
                    if let Some(lock) = d.lock(name, t) {
                        file.locks.push(lock);
                    }
                }),
                "process" => self.each_named("process", v, |d, name, t| {
                    let expanded = d.expand_process(text, &name.value, t);
                    let t = expanded.as_ref().unwrap_or(t);
                    let mut p = d.process(name, t);
                    if let Some(ef) = t.get("env_file") {
                        let what = format!("process.{}.env_file", p.name.value);
                        p.env.splice(0..0, d.env_file(&what, ef));
                    }
                    file.processes.push(p)
                }),
                "queue" => {
                    self.each_named("queue", v, |d, name, t| file.queues.push(d.queue(name, t)))
                }
                "pipe" => self.each_named("pipe", v, |d, name, t| file.pipes.push(d.pipe(name, t))),
                _ => self.unknown_key(k, KEYS_TOP, "the top level"),
            }
        }
    }

    /// Walks `[kind.NAME]` tables, checking names, calling `f` for each.
    fn each_named(
        &mut self,
        kind: &str,
        v: Value<'_>,
        mut f: impl FnMut(&mut Self, Sp<String>, &DeTable<'_>),
    ) {
        if self.table(&kind, &v).is_none() {
            return;
        }
        let DeValue::Table(t) = v.into_inner() else {
            return;
        };
        for (k, v) in t {
            let (k, v) = (&k, &v);
            if !self.first_definition(format!("{kind}.{}", key_str(k)), self.at(k.span())) {
                continue;
            }
            let name = self.name(kind, k);
            match v.get_ref() {
                DeValue::Table(inner) => f(self, name, inner),
                _ => {
                    let help = Some(format!("declare it as a table: [{kind}.{}]", name.value));
                    self.wrong_type(&format!("{kind}.{}", name.value), "a table", v, help);
                }
            }
        }
    }

    fn graph(&mut self, t: &DeTable<'_>) -> GraphSettings {
        let mut g = GraphSettings::default();
        for (k, v) in t.iter() {
            match key_str(k) {
                "name" => {
                    if let Some(s) = self.string(&"graph.name", v) {
                        if s.value.trim().is_empty() {
                            self.push(
                                Diagnostic::at(
                                    Code::BadName,
                                    self.at(v.span()),
                                    "`graph.name` is empty",
                                )
                                .label("empty name"),
                            );
                        } else {
                            g.name = Some(s);
                        }
                    }
                }
                "max_parallel" => {
                    if let Some(n) = self.int(
                        &"graph.max_parallel",
                        v,
                        Code::BadNumber,
                        1,
                        u32::MAX as i64,
                    ) {
                        g.max_parallel = Some(Sp::new(n as u32, self.at(v.span())));
                    }
                }
                "shutdown_grace" => {
                    if let Some(d) = self.duration(&"graph.shutdown_grace", v, true) {
                        g.shutdown_grace = d;
                    }
                }
                "fail_fast" => {
                    if let Some(b) = self.boolean(&"graph.fail_fast", v) {
                        g.fail_fast = b;
                    }
                }
                "env_file" => {} // read by env_file.rs
                "executor" => g.executor = self.executor(v),
                _ => self.unknown_key(k, KEYS_GRAPH, "[graph]"),
            }
        }
        g
    }

    fn lock(&mut self, name: Sp<String>, t: &DeTable<'_>) -> Option<Lock> {
        let mut capacity = Sp::new(1, name.span.clone());
        for (k, v) in t.iter() {
            match key_str(k) {
                "capacity" => {
                    let what = format!("lock.{}.capacity", name.value);
                    if let Some(n) = self.int(&what, v, Code::BadCapacity, 1, MAX_COUNT) {
                        capacity = Sp::new(n as u32, self.at(v.span()));
                    }
                }
                _ => self.unknown_key(k, KEYS_LOCK, "a lock"),
            }
        }
        Some(Lock { name, capacity })
    }

    fn process(&mut self, name: Sp<String>, t: &DeTable<'_>) -> Process {
        let mut p = Process::new(name);
        let n = p.name.value.clone();
        let prefix = format!("process.{n}");
        let q = |key: &'static str| Dotted(&prefix, key);
        let mut cmd: Option<(Command, std::ops::Range<usize>)> = None;
        let mut shell: Option<(Command, std::ops::Range<usize>)> = None;
        let mut typo_command = false;
        for (k, v) in t.iter() {
            match key_str(k) {
                "cmd" => {
                    let help = || {
                        Some("cmd takes an argv array such as [\"ls\", \"-l\"]; for a shell command line write shell = \"...\"".to_string())
                    };
                    if let Some(argv) = self.strings(&q("cmd"), v, &help) {
                        if argv.is_empty() {
                            self.push(
                                Diagnostic::at(
                                    Code::EmptyArgv,
                                    self.at(v.span()),
                                    format!("`{}` is empty", q("cmd")),
                                )
                                .label("no program")
                                .help(
                                    "name the program and its arguments: cmd = [\"echo\", \"hi\"]",
                                ),
                            );
                        } else if argv[0].value.is_empty() {
                            self.push(
                                Diagnostic::at(
                                    Code::EmptyArgv,
                                    argv[0].span.clone(),
                                    "the program name is empty",
                                )
                                .label("empty program name"),
                            );
                        }
                        cmd = Some((Command::Argv(argv), self.at(k.span())));
                    } else {
                        cmd = Some((Command::Missing, self.at(k.span())));
                    }
                }
                "shell" => {
                    if let Some(s) = self.string(&q("shell"), v) {
                        if s.value.trim().is_empty() {
                            self.push(
                                Diagnostic::at(
                                    Code::EmptyArgv,
                                    self.at(v.span()),
                                    format!("`{}` is empty", q("shell")),
                                )
                                .label("empty command line"),
                            );
                        }
                        shell = Some((Command::Shell(s), self.at(k.span())));
                    } else {
                        shell = Some((Command::Missing, self.at(k.span())));
                    }
                }
                "cwd" => p.cwd = self.string(&q("cwd"), v),
                "env" => {
                    if let Some(t) = self.table(&q("env"), v) {
                        p.env = self.env(&q("env"), t);
                    }
                }
                "start" => {
                    if let Some(i) = self.choice(&q("start"), v, &["fork", "spawn"]) {
                        p.start = [StartMethod::Fork, StartMethod::Spawn][i];
                    }
                }
                "after" => p.after = self.after(&q("after"), v),
                "parent" => p.parent = self.string(&q("parent"), v),
                "daemon" => {
                    if let Some(b) = self.boolean(&q("daemon"), v) {
                        p.daemon = Sp::new(b, self.at(v.span()));
                    }
                }
                "replicas" => {
                    if let Some(r) = self.int(&q("replicas"), v, Code::BadReplicas, 1, MAX_REPLICAS)
                    {
                        p.replicas = Sp::new(r as u32, self.at(v.span()));
                    }
                }
                "ready" => p.ready = self.ready(&q("ready"), v),
                "timeout" => p.timeout = self.duration(&q("timeout"), v, false),
                "retries" => {
                    if let Some(r) = self.int(&q("retries"), v, Code::BadNumber, 0, MAX_COUNT) {
                        p.retries = r as u32;
                    }
                }
                "retry_delay" => {
                    if let Some(d) = self.duration(&q("retry_delay"), v, true) {
                        p.retry_delay = d;
                    }
                }
                "restart" => {
                    if let Some(i) =
                        self.choice(&q("restart"), v, &["never", "on-failure", "always"])
                    {
                        p.restart = [Restart::Never, Restart::OnFailure, Restart::Always][i];
                    }
                }
                "max_restarts" => {
                    if let Some(r) = self.int(&q("max_restarts"), v, Code::BadNumber, 0, MAX_COUNT)
                    {
                        p.max_restarts = r as u32;
                    }
                }
                "locks" => {
                    let help = || {
                        Some(format!(
                            "write locks = [\"{}\"]",
                            match v.get_ref() {
                                DeValue::String(s) => s.as_ref(),
                                _ => "db",
                            }
                        ))
                    };
                    p.locks = self.names(&q("locks"), v, &help);
                }
                "stop_signal" => {
                    if let Some(s) = self.string(&q("stop_signal"), v) {
                        match parse_signal(&s.value) {
                            Ok(sig) => p.stop_signal = sig,
                            Err(suggestion) => self.push(
                                Diagnostic::at(
                                    Code::BadSignal,
                                    s.span,
                                    if is_signal_name(&s.value) {
                                        format!("`{}` pauses or resumes a process; it cannot stop one", s.value)
                                    } else {
                                        format!("`{}` is not a signal", s.value)
                                    },
                                )
                                .label("unusable signal")
                                    .help(match suggestion {
                                        Some(s) => format!("did you mean \"{s}\"?"),
                                        None => "use a signal name such as \"SIGTERM\", \"SIGINT\" or \"SIGHUP\"".into(),
                                    }),
                            ),
                        }
                    }
                }
                "success_codes" => {
                    if let Some(codes) = self.success_codes(&q("success_codes"), v) {
                        p.success_codes = codes;
                    }
                }
                "stdin" => {
                    if let Some(i) = self.choice(&q("stdin"), v, &["null", "inherit"]) {
                        p.stdin = [Stdin::Null, Stdin::Inherit][i];
                    }
                }
                "stdout" => {
                    if let Some(o) = self.output(&q("stdout"), v) {
                        p.stdout = o;
                    }
                }
                "stderr" => {
                    if let Some(o) = self.output(&q("stderr"), v) {
                        p.stderr = o;
                    }
                }
                "always" => {
                    if let Some(b) = self.boolean(&q("always"), v) {
                        p.always = Sp::new(b, self.at(v.span()));
                    }
                }
                "tty" => {
                    if let Some(b) = self.boolean(&q("tty"), v) {
                        p.tty = Sp::new(b, self.at(v.span()));
                    }
                }
                "for_each" => p.for_each = self.for_each(&q("for_each"), v),
                "health" => p.health = self.health(&q("health"), v),
                "slurm" => p.slurm = self.process_slurm(&n, v),
                "env_file" => {} // read by env_file.rs
                other => {
                    // A misspelt `cmd`/`shell` is reported once, not again as a missing command.
                    typo_command |= did_you_mean(other, ["cmd", "shell"]).is_some()
                        || matches!(alias(other, KEYS_PROCESS), Some("cmd" | "shell"));
                    if matches!(v.get_ref(), DeValue::Table(_))
                        && alias(other, PROCESS_TABLES).is_none()
                    {
                        self.unknown_table(k, &n);
                    } else if let (Some("cmd"), DeValue::String(line)) =
                        (alias(other, KEYS_PROCESS), v.get_ref())
                    {
                        // compose's `command: make all` is a command line: jobgraph's `shell`.
                        self.push(
                            Diagnostic::at(
                                Code::UnknownKey,
                                self.at(k.span()),
                                format!("unknown key `{other}` in a process"),
                            )
                            .label("unknown key")
                            .help(format!(
                                "did you mean `cmd`? jobgraph's `cmd` is an argv array, cmd = [\"program\", \"arg\"]; for a command line write shell = \"{line}\""
                            )),
                        );
                    } else {
                        self.unknown_key(k, KEYS_PROCESS, "a process");
                    }
                }
            }
        }
        p.command = match (cmd, shell) {
            (Some((c, _)), None) | (None, Some((c, _))) => c,
            (Some((c, cmd_span)), Some((_, shell_span))) => {
                self.push(
                    Diagnostic::at(Code::CommandConflict, shell_span, format!("process `{n}` has both `cmd` and `shell`"))
                        .label("second command")
                        .related(cmd_span, "first command")
                        .help("keep `cmd` to exec a program directly, or `shell` to run a command line through /bin/sh"),
                );
                c
            }
            (None, None) if typo_command => Command::Missing,
            (None, None) => {
                self.push(
                    Diagnostic::at(
                        Code::CommandMissing,
                        p.name.span.clone(),
                        format!("process `{n}` has no command"),
                    )
                    .label("no `cmd` or `shell`")
                    .help("add cmd = [\"program\", \"arg\"] or shell = \"a | command line\""),
                );
                Command::Missing
            }
        };
        p
    }

    fn after(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Vec<After> {
        match v.get_ref() {
            DeValue::Table(t) => {
                let mut out = Vec::with_capacity(t.len());
                for (k, cond) in t.iter() {
                    let condition =
                        match self.choice(&format!("{what}.{}", key_str(k)), cond, CONDITIONS) {
                            Some(i) => [
                                Condition::Success,
                                Condition::Exit,
                                Condition::Ready,
                                Condition::Start,
                            ][i],
                            None => continue,
                        };
                    out.push(After {
                        process: Sp::new(key_str(k).to_string(), self.at(k.span())),
                        condition,
                    });
                }
                out
            }
            _ => {
                let help = || match v.get_ref() {
                    DeValue::String(s) => Some(format!("write after = [\"{s}\"]")),
                    _ => Some("write after = [\"name\"] or after = { name = \"ready\" }".into()),
                };
                let names = self.names(what, v, &help);
                names
                    .into_iter()
                    .map(|process| After {
                        process,
                        condition: Condition::Success,
                    })
                    .collect()
            }
        }
    }

    fn success_codes(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Vec<i32>> {
        let DeValue::Array(items) = v.get_ref() else {
            self.wrong_type(
                what,
                "an array of integers",
                v,
                Some(format!("write {} = [0, 1]", "success_codes")),
            );
            return None;
        };
        if items.is_empty() {
            self.push(
                Diagnostic::at(
                    Code::BadNumber,
                    self.at(v.span()),
                    format!("`{what}` is empty, so the process could never succeed"),
                )
                .label("empty")
                .help("list at least one exit code, e.g. [0]"),
            );
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            out.push(self.int(&format!("{what}[{i}]"), item, Code::BadNumber, 0, 255)? as i32);
        }
        Some(out)
    }

    fn output(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Output> {
        match v.get_ref() {
            DeValue::Table(t) => {
                let mut path = None;
                let mut reported = false;
                for (k, fv) in t.iter() {
                    match key_str(k) {
                        "file" => {
                            path = self.string(&format!("{what}.file"), fv);
                            reported |= path.is_none();
                        }
                        _ => self.unknown_key(k, &["file"], &format!("`{what}`")),
                    }
                }
                match path {
                    Some(p) if !p.value.is_empty() => Some(Output::File(p.value)),
                    None if reported => None,
                    _ => {
                        self.push(
                            Diagnostic::at(
                                Code::WrongType,
                                self.at(v.span()),
                                format!("`{what}` as a table needs a non-empty `file`"),
                            )
                            .help(format!(
                                "write {} = {{ file = \"out.log\" }}",
                                what.to_string().rsplit('.').next().unwrap_or("stdout")
                            )),
                        );
                        None
                    }
                }
            }
            DeValue::String(text) if !matches!(text.as_ref(), "log" | "null" | "inherit") => {
                let text = text.to_string();
                if !self.no_nul(what, &text, v.span()) {
                    return None;
                }
                let key = last_key(what);
                let file = format!("{key} = {{ file = \"{text}\" }}");
                let help = match did_you_mean(&text, ["log", "null", "inherit"]) {
                    _ if text.contains(['.', '/']) => format!("to write to a file, write {file}"),
                    Some(c) => format!("did you mean \"{c}\"? (a file is written {file})"),
                    None => format!(
                        "write \"log\", \"null\" or \"inherit\"; to write to a file, write {file}"
                    ),
                };
                self.push(
                    Diagnostic::at(
                        Code::UnknownValue,
                        self.at(v.span()),
                        format!(
                            "`{what}` cannot be \"{text}\"; it is one of \"log\", \"null\", \"inherit\" or {{ file = \"path\" }}"
                        ),
                    )
                    .label("unknown value")
                    .help(help),
                );
                None
            }
            _ => {
                let i = self.choice(what, v, &["log", "null", "inherit"])?;
                Some([Output::Log, Output::Null, Output::Inherit][i].clone())
            }
        }
    }

    fn ready(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Ready> {
        let t = self.probe_table(what, v, KEYS_READY, "`ready`")?;
        Some(Ready {
            probe: t.probe?,
            interval: t.interval.unwrap_or(Duration::from_millis(200)),
            timeout: t.timeout.unwrap_or(Duration::from_secs(30)),
        })
    }

    fn health(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Health> {
        let t = self.probe_table(what, v, KEYS_HEALTH, "`health`")?;
        Some(Health {
            probe: t.probe?,
            interval: t.interval.unwrap_or(Duration::from_secs(5)),
            failures: t.failures.unwrap_or(3),
        })
    }

    /// A table with exactly one probe (`tcp`, `cmd`, `log`, `file`, `http`)
    /// and its settings; `keys` are the keys this kind of table allows.
    fn probe_table(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
        keys: &[&str],
        context: &str,
    ) -> Option<ProbeTable> {
        let t = self.table(what, v)?;
        let mut out = ProbeTable::default();
        let mut probe: Option<(Probe, std::ops::Range<usize>)> = None;
        let mut status: Option<(Vec<u16>, std::ops::Range<usize>)> = None;
        let mut ok = true;
        for (k, pv) in t.iter() {
            let key = key_str(k);
            if !keys.contains(&key) {
                self.unknown_key(k, keys, context);
                continue;
            }
            let found = match key {
                "interval" => {
                    out.interval = self.duration(&format!("{what}.interval"), pv, false);
                    continue;
                }
                "timeout" => {
                    out.timeout = self.duration(&format!("{what}.timeout"), pv, false);
                    continue;
                }
                "failures" => {
                    out.failures = self
                        .int(
                            &format!("{what}.failures"),
                            pv,
                            Code::BadNumber,
                            1,
                            MAX_COUNT,
                        )
                        .map(|n| n as u32);
                    continue;
                }
                "status" => {
                    status = self
                        .statuses(&format!("{what}.status"), pv)
                        .map(|s| (s, self.at(k.span())));
                    continue;
                }
                _ => self.probe_kind(what, key, pv),
            };
            match (found, &probe) {
                (_, Some((_, first))) => {
                    ok = false;
                    self.push(
                        Diagnostic::at(Code::BadProbe, self.at(k.span()), format!("`{what}` has more than one probe"))
                            .label("second probe")
                            .related(first.clone(), "first probe")
                            .help("keep one of tcp, cmd, log, file or http; chain checks in a cmd probe if you need several"),
                    );
                }
                (Some(p), None) => probe = Some((p, self.at(pv.span()))),
                (None, None) => ok = false,
            }
        }
        match (&mut probe, status) {
            (Some((Probe::Http { status, .. }, _)), Some((s, _))) => *status = s,
            (_, Some((_, span))) if ok => {
                ok = false;
                self.push(
                    Diagnostic::at(
                        Code::BadProbe,
                        span,
                        format!("`{what}.status` applies only to an http probe"),
                    )
                    .label("no http probe")
                    .help("drop status, or probe with http = \"http://127.0.0.1:8080/health\""),
                );
            }
            _ => {}
        }
        match probe {
            Some((p, span)) if ok => {
                out.probe = Some(Sp::new(p, span));
                Some(out)
            }
            Some(_) => None,
            None if ok => {
                self.push(
                    Diagnostic::at(Code::BadProbe, self.at(v.span()), format!("`{what}` has no probe"))
                        .label("no probe")
                        .help(if keys.contains(&"log") {
                            "add one of tcp = \"127.0.0.1:8080\", http = \"http://127.0.0.1:8080/health\", cmd = [...], log = \"regex\" or file = \"path\""
                        } else {
                            "add one of tcp = \"127.0.0.1:8080\", http = \"http://127.0.0.1:8080/health\", cmd = [...] or file = \"path\""
                        }),
                );
                None
            }
            None => None,
        }
    }

    /// One probe key's value: `None` when it is invalid (already reported).
    fn probe_kind(
        &mut self,
        what: &dyn std::fmt::Display,
        key: &str,
        pv: &Value<'_>,
    ) -> Option<Probe> {
        match key {
            "tcp" => self.tcp_probe(&format!("{what}.tcp"), pv),
            "http" => self.http_probe(&format!("{what}.http"), pv),
            "cmd" => self.strings(&format!("{what}.cmd"), pv, &|| None).and_then(|argv| {
                if argv.first().is_none_or(|a| a.value.is_empty()) {
                    self.push(Diagnostic::at(Code::BadProbe, self.at(pv.span()), "the probe command is empty").label("no program"));
                    None
                } else {
                    Some(Probe::Cmd(argv.into_iter().map(|a| a.value).collect()))
                }
            }),
            "log" => self.string(&format!("{what}.log"), pv).and_then(|re| match regex::Regex::new(&re.value) {
                Ok(_) => Some(Probe::Log(re.value)),
                Err(e) => {
                    let detail = e.to_string();
                    let last = detail.lines().last().unwrap_or("invalid regex").trim();
                    let last = last.strip_prefix("error: ").unwrap_or(last).to_string();
                    self.push(
                        Diagnostic::at(Code::BadProbe, self.at(pv.span()), format!("the log probe is not a valid regex: {last}"))
                            .label("invalid regex")
                            .help("the syntax is Rust's regex crate (like RE2); escape literal brackets with \\\\"),
                    );
                    None
                }
            }),
            _ => self.string(&format!("{what}.file"), pv).and_then(|f| {
                if f.value.is_empty() {
                    self.push(Diagnostic::at(Code::BadProbe, self.at(pv.span()), "the file probe's path is empty"));
                    None
                } else {
                    Some(Probe::File(f.value))
                }
            }),
        }
    }

    /// `http = "http://host:port/path"`: plain HTTP (a health endpoint on the
    /// process's own machine; no TLS).
    fn http_probe(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Probe> {
        let s = self.string(what, v)?;
        let valid = s.value.strip_prefix("http://").is_some_and(|rest| {
            !rest.is_empty() && !rest.starts_with('/') && !rest.contains(char::is_whitespace)
        });
        if valid {
            return Some(Probe::Http {
                url: s.value,
                status: Vec::new(),
            });
        }
        let help = if s.value.starts_with("https://") {
            "the probe speaks plain HTTP to the process itself: use http://, or a cmd probe with curl for TLS"
        } else {
            "write http = \"http://127.0.0.1:8080/health\""
        };
        self.push(
            Diagnostic::at(
                Code::BadProbe,
                s.span,
                format!("`{what}` is not an http:// URL"),
            )
            .label("expected http://host:port/path")
            .help(help),
        );
        None
    }

    /// `status = 200` or `status = [200, 204]`.
    fn statuses(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Vec<u16>> {
        let items: Vec<&Value<'_>> = match v.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            _ => vec![v],
        };
        let mut out = Vec::new();
        for item in items {
            out.push(self.int(what, item, Code::BadProbe, 100, 599)? as u16);
        }
        if out.is_empty() {
            self.push(
                Diagnostic::at(
                    Code::BadProbe,
                    self.at(v.span()),
                    format!("`{what}` is empty"),
                )
                .help(
                    "list the accepted statuses, e.g. status = [200, 204], or drop it for any 2xx",
                ),
            );
            return None;
        }
        Some(out)
    }

    /// `for_each = ["a", "b"]` or `for_each = { glob = "data/*.csv" }`.
    fn for_each(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<ForEach> {
        match v.get_ref() {
            DeValue::Array(_) => {
                let items = self.strings(what, v, &|| None)?;
                if items.is_empty() {
                    self.push(
                        Diagnostic::at(
                            Code::BadForEach,
                            self.at(v.span()),
                            format!("`{what}` is empty"),
                        )
                        .label("no items")
                        .help("list at least one item, or drop for_each"),
                    );
                    return None;
                }
                Some(ForEach::List(items))
            }
            DeValue::Table(t) => {
                let mut glob = None;
                for (k, gv) in t.iter() {
                    match key_str(k) {
                        "glob" => glob = self.string(&format!("{what}.glob"), gv),
                        _ => self.unknown_key(k, &["glob"], "`for_each`"),
                    }
                }
                match glob {
                    Some(g) if !g.value.is_empty() => Some(ForEach::Glob(g)),
                    Some(_) | None => {
                        self.push(
                            Diagnostic::at(
                                Code::BadForEach,
                                self.at(v.span()),
                                format!("`{what}` has no glob pattern"),
                            )
                            .help("write for_each = { glob = \"data/*.csv\" }"),
                        );
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(what, "an array of strings or { glob = \"...\" }", v, None);
                None
            }
        }
    }

    fn tcp_probe(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Probe> {
        let s = self.string(what, v)?;
        let parsed = s.value.rsplit_once(':').and_then(|(host, port)| {
            let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
            // An IPv6 address needs brackets, or its last group reads as the port.
            if bracketed.is_none() && host.contains(':') {
                return None;
            }
            let host = bracketed.unwrap_or(host);
            let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
            // An IPv6 address needs brackets, or its last group reads as the port.
            (!host.is_empty()).then(|| (host.to_string(), port))
        });
        match parsed {
            Some((host, port)) => Some(Probe::Tcp { host, port }),
            None => {
                self.push(
                    Diagnostic::at(Code::BadProbe, s.span, format!("`{what}` is not host:port"))
                        .label("expected host:port")
                        .help("write tcp = \"127.0.0.1:8080\" (a port from 1 to 65535; IPv6 as \"[::1]:8080\")"),
                );
                None
            }
        }
    }

    fn queue(&mut self, name: Sp<String>, t: &DeTable<'_>) -> Queue {
        let n = name.value.clone();
        let empty = Sp::new(Vec::new(), name.span.clone());
        let mut q = Queue {
            from: empty.clone(),
            to: empty,
            name,
            capacity: 1024,
            mode: QueueMode::Balance,
            framing: Framing::Line,
        };
        for (k, v) in t.iter() {
            let what = format!("queue.{n}.{}", key_str(k));
            match key_str(k) {
                "from" | "to" => {
                    let help = || match v.get_ref() {
                        DeValue::String(s) => Some(format!("write {} = [\"{s}\"]", key_str(k))),
                        _ => None,
                    };
                    {
                        let list = Sp::new(self.names(&what, v, &help), self.at(v.span()));
                        if key_str(k) == "from" {
                            q.from = list;
                        } else {
                            q.to = list;
                        }
                    }
                }
                "capacity" => {
                    if let Some(c) = self.int(&what, v, Code::BadCapacity, 1, MAX_QUEUE_CAPACITY) {
                        q.capacity = c as u32;
                    }
                }
                "mode" => {
                    if let Some(i) = self.choice(&what, v, &["balance", "broadcast"]) {
                        q.mode = [QueueMode::Balance, QueueMode::Broadcast][i];
                    }
                }
                "framing" => {
                    if let Some(i) = self.choice(&what, v, &["line", "nul"]) {
                        q.framing = [Framing::Line, Framing::Nul][i];
                    }
                }
                _ => self.unknown_key(k, KEYS_QUEUE, "a queue"),
            }
        }
        q
    }

    fn pipe(&mut self, name: Sp<String>, t: &DeTable<'_>) -> Pipe {
        let n = name.value.clone();
        let (mut from, mut to, mut between) = (None, None, None);
        let mut bad = false;
        for (k, v) in t.iter() {
            let what = format!("pipe.{n}.{}", key_str(k));
            match key_str(k) {
                "from" | "to" => {
                    let help = match v.get_ref() {
                        DeValue::Array(a) if a.len() == 1 => Some(format!("a pipe joins one process to one: write {} = \"…\"", key_str(k))),
                        DeValue::Array(_) => Some("a pipe joins one process to one; for many producers or consumers use a [queue]".into()),
                        _ => None,
                    };
                    let value = match v.get_ref() {
                        DeValue::String(s) => Some(Sp::new(s.to_string(), self.at(v.span()))),
                        _ => {
                            self.wrong_type(&what, "a process name", v, help);
                            bad = true;
                            None
                        }
                    };
                    if key_str(k) == "from" {
                        from = Some((value, self.at(k.span())));
                    } else {
                        to = Some((value, self.at(k.span())));
                    }
                }
                "between" => match self.strings(&what, v, &|| None) {
                    Some(list) if list.len() == 2 => between = Some((list, self.at(k.span()))),
                    Some(list) => {
                        bad = true;
                        self.push(
                            Diagnostic::at(Code::PipeShape, self.at(v.span()), format!("`{what}` names {} process(es); a duplex pipe joins exactly two", list.len()))
                                .label("expected two names")
                                .help("write between = [\"client\", \"server\"]; for more processes use a [queue]"),
                        );
                    }
                    None => bad = true,
                },
                _ => self.unknown_key(k, KEYS_PIPE, "a pipe"),
            }
        }
        let ends = match (from, to, between) {
            (Some((Some(from), _)), Some((Some(to), _)), None) => PipeEnds::OneWay { from, to },
            (None, None, Some((list, _))) => {
                let mut it = list.into_iter();
                match (it.next(), it.next()) {
                    (Some(a), Some(b)) => PipeEnds::Duplex { between: [a, b] },
                    _ => PipeEnds::Invalid,
                }
            }
            _ if bad => PipeEnds::Invalid,
            (f, t, b) => {
                let (span, message) = match (&f, &t, &b) {
                    (_, _, Some((_, bs))) if f.is_some() || t.is_some() => (
                        bs.clone(),
                        format!("pipe `{n}` has both `between` and `from`/`to`"),
                    ),
                    (Some((_, fs)), None, None) => {
                        (fs.clone(), format!("pipe `{n}` has `from` but no `to`"))
                    }
                    (None, Some((_, ts)), None) => {
                        (ts.clone(), format!("pipe `{n}` has `to` but no `from`"))
                    }
                    _ => (name.span.clone(), format!("pipe `{n}` has no ends")),
                };
                self.push(
                    Diagnostic::at(Code::PipeShape, span, message)
                        .help("a pipe is one-way (from = \"a\", to = \"b\") or duplex (between = [\"a\", \"b\"])"),
                );
                PipeEnds::Invalid
            }
        };
        Pipe { name, ends }
    }
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
