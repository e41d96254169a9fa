//! `env_file`: dotenv files, at `[graph]` level and per process.
//!
//! The files are read while the file is decoded (so `validate` reports a
//! missing or malformed one), with [`crate::spec::dotenv`]. Their variables are
//! put in front of the `[env]` table (graph level) or of the process's own
//! `env`, so that those override them; the runtime needs nothing new.
//!
//! This is a child module of `decode.rs`: it extends the decoder.

use super::*;
use std::path::{Path, PathBuf};

/// Keys of an `env_file` entry written as a table.
const KEYS_ENV_FILE: &[&str] = &["path", "optional"];

type Entries = Vec<(Sp<String>, Sp<String>)>;

impl Decoder {
    /// Reads every file an `env_file` value names, in order (later files win).
    pub(super) fn env_file(&mut self, what: &str, v: &Value<'_>) -> Entries {
        let mut out = Vec::new();
        match v.get_ref() {
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    if let Some((path, optional, span)) =
                        self.env_file_entry(&format!("{what}[{i}]"), item)
                    {
                        out.extend(self.read_env_file(&path, optional, span));
                    }
                }
            }
            _ => {
                if let Some((path, optional, span)) = self.env_file_entry(what, v) {
                    out.extend(self.read_env_file(&path, optional, span));
                }
            }
        }
        out
    }

    /// One entry: `".env"` or `{ path = ".env", optional = true }`.
    fn env_file_entry(&mut self, what: &str, v: &Value<'_>) -> Option<(String, bool, Span)> {
        match v.get_ref() {
            DeValue::String(_) => {
                let s = self.string(&what, v)?;
                self.non_empty_path(what, s)
                    .map(|s| (s.value, false, s.span))
            }
            DeValue::Table(t) => {
                let mut path = None;
                let mut optional = false;
                let mut bad = false;
                for (k, fv) in t.iter() {
                    match key_str(k) {
                        "path" => {
                            path = self.string(&format!("{what}.path"), fv);
                            bad |= path.is_none();
                        }
                        "optional" => match self.boolean(&format!("{what}.optional"), fv) {
                            Some(b) => optional = b,
                            None => bad = true,
                        },
                        _ => self.unknown_key(k, KEYS_ENV_FILE, &format!("`{what}`")),
                    }
                }
                match path {
                    Some(p) => self
                        .non_empty_path(what, p)
                        .map(|s| (s.value, optional, s.span)),
                    None => {
                        if !bad {
                            self.push(
                                Diagnostic::at(
                                    Code::WrongType,
                                    self.at(v.span()),
                                    format!("`{what}` as a table needs `path`"),
                                )
                                .label("no `path`")
                                .help("write { path = \".env\", optional = true }"),
                            );
                        }
                        None
                    }
                }
            }
            _ => {
                self.wrong_type(
                    &what,
                    "a path, a list of paths, or { path = \"…\", optional = true }",
                    v,
                    Some("write env_file = \".env\", env_file = [\"a.env\", \"b.env\"] or env_file = { path = \".env\", optional = true }".into()),
                );
                None
            }
        }
    }

    fn non_empty_path(&mut self, what: &str, s: Sp<String>) -> Option<Sp<String>> {
        if !s.value.is_empty() {
            return Some(s);
        }
        self.push(
            Diagnostic::at(
                Code::BadEnvFile,
                s.span,
                format!("`{what}` is an empty path"),
            )
            .label("empty path")
            .help("name a dotenv file, e.g. \".env\""),
        );
        None
    }

    /// Reads one dotenv file; `span` is the path's span in the job file.
    fn read_env_file(&mut self, path: &str, optional: bool, span: Span) -> Entries {
        let full = if self.base == Path::new(".") {
            PathBuf::from(path)
        } else {
            self.base.join(path)
        };
        let parsed = match env_file_bytes(&full, optional) {
            Ok(Some(bytes)) => parse_env_file(&bytes, &span),
            Ok(None) => return Vec::new(),
            Err(failure) => Err(failure),
        };
        match parsed {
            Ok(out) => out,
            Err((why, help)) => {
                self.push(
                    Diagnostic::at(Code::BadEnvFile, span, format!("env file `{path}` {why}"))
                        .label("this env file")
                        .help(help.to_string()),
                );
                Vec::new()
            }
        }
    }
}

/// What is wrong with an env file, after "env file `…`", and a help line.
type Failure = (String, &'static str);

/// The file's bytes, or `None` when it is optional and missing.
fn env_file_bytes(full: &Path, optional: bool) -> Result<Option<Vec<u8>>, Failure> {
    let meta = match std::fs::metadata(full) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if optional {
                return Ok(None);
            }
            return Err((
                format!("does not exist ({})", full.display()),
                "create it or fix the path (relative to the job file's directory); if it may be missing, write { path = \"…\", optional = true }",
            ));
        }
        Err(e) => {
            return Err((
                format!("cannot be read ({}): {e}", full.display()),
                "check its permissions",
            ))
        }
    };
    if !meta.is_file() {
        return Err((
            format!("is not a regular file ({})", full.display()),
            "name a dotenv file",
        ));
    }
    if meta.len() > crate::source::MAX_FILE_BYTES {
        return Err(("is larger than 32 MiB".to_string(), "name a dotenv file"));
    }
    match std::fs::read(full) {
        Ok(b) => Ok(Some(b)),
        Err(e) => Err((
            format!("cannot be read ({}): {e}", full.display()),
            "check its permissions",
        )),
    }
}

/// The file's variables, each spanned at the path in the job file.
fn parse_env_file(bytes: &[u8], span: &Span) -> Result<Entries, Failure> {
    let text = String::from_utf8_lossy(bytes);
    let env = |k: &str| std::env::var(k).ok();
    let vars = crate::spec::dotenv::parse(&text, &env).map_err(|bad| {
        (
            format!(
                "is not valid dotenv at line {}: `{}`",
                bad.number,
                bad.text.chars().take(80).collect::<String>()
            ),
            "each line is NAME=value, with optional quotes ('…' or \"…\") and # comments",
        )
    })?;
    let mut out = Vec::new();
    for (k, v) in vars {
        if k.contains('\0') || v.contains('\0') {
            return Err((
                format!("sets `{k}`, which no environment can hold"),
                "environment variable names are non-empty without `=`, and nothing may contain NUL",
            ));
        }
        out.push((Sp::new(k, span.clone()), Sp::new(v, span.clone())));
    }
    Ok(out)
}
