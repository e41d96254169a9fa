//! `include = ["common.toml"]`: other job files whose processes, locks,
//! queues, pipes, `[env]` and `[vars]` join the graph.
//!
//! Included files are read before decoding and appended to the main file's
//! [`SourceFile`] as further parts, so that every span (an offset into the
//! whole) also names its file. Each file is included once, however many
//! files include it; a file that includes itself, directly or not, is a cycle.

use super::*;
use crate::code::Code;
use crate::diagnostic::Diagnostic;
use crate::source::SourceFile;
use std::path::{Path, PathBuf};

/// At most this many files, the main one included, make up one graph.
const MAX_FILES: usize = 256;

/// Reads the files `source` includes, recursively; returns the source with
/// them appended, and the problems found on the way.
pub fn load(mut source: SourceFile) -> (SourceFile, Vec<Diagnostic>) {
    let mut diags = Vec::new();
    if !source.text().contains("include") {
        return (source, diags);
    }
    let root = identity(source.path());
    let mut stack = vec![root.clone()];
    let mut seen = vec![root];
    expand(&mut source, 0, &mut stack, &mut seen, &mut diags);
    (source, diags)
}

/// A file's identity: its canonical path when it exists.
fn identity(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
}

/// The `include` list of part `index`, with spans in the whole text.
fn includes(
    source: &SourceFile,
    index: usize,
    diags: &mut Vec<Diagnostic>,
) -> Vec<(String, std::ops::Range<usize>)> {
    let range = source.parts()[index].range.clone();
    let text = &source.text()[range.clone()];
    // `include` is a top-level key, so it comes before the first table
    // header: only that head is parsed, unless the cut is not clean.
    let mut pos = 0;
    let mut cut = text.len();
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('[') {
            cut = pos;
            break;
        }
        pos += line.len();
    }
    let head = &text[..cut];
    if !head.contains("include") {
        return Vec::new();
    }
    // A syntax error is reported when the part is decoded.
    let Ok(root) = DeTable::parse(head).or_else(|_| DeTable::parse(text)) else {
        return Vec::new();
    };
    let Some(v) = root.get_ref().get("include") else {
        return Vec::new();
    };
    let at = |s: std::ops::Range<usize>| s.start + range.start..s.end + range.start;
    let wrong = |span| {
        Diagnostic::at(
            Code::WrongType,
            at(span),
            "`include` must be an array of paths",
        )
        .label("expected an array of strings")
        .help("write include = [\"common.toml\"]")
    };
    let items = match v.get_ref() {
        DeValue::Array(items) => items,
        DeValue::Table(_) => return Vec::new(), // reported by the decoder, which sees `[include]` too
        _ => {
            diags.push(wrong(v.span()));
            return Vec::new();
        }
    };
    let mut out = Vec::new();
    for item in items.iter() {
        match item.get_ref() {
            DeValue::String(s) if !s.is_empty() && !s.contains('\0') => {
                out.push((s.to_string(), at(item.span())))
            }
            DeValue::String(_) => diags.push(
                Diagnostic::at(
                    Code::BadInclude,
                    at(item.span()),
                    "an empty path (or one with a NUL) cannot be included",
                )
                .label("bad path")
                .help("name a job file, relative to this file: include = [\"common.toml\"]"),
            ),
            _ => diags.push(wrong(item.span())),
        }
    }
    out
}

fn expand(
    source: &mut SourceFile,
    index: usize,
    stack: &mut Vec<PathBuf>,
    seen: &mut Vec<PathBuf>,
    diags: &mut Vec<Diagnostic>,
) {
    let dir = source.parts()[index].path.parent().map(Path::to_path_buf);
    for (name, span) in includes(source, index, diags) {
        // Shown as written when the including file is in the current directory.
        let path = dir.as_deref().unwrap_or(Path::new("")).join(&name);
        let id = identity(&path);
        if let Some(pos) = stack.iter().position(|s| *s == id) {
            let chain: Vec<String> = stack[pos..]
                .iter()
                .chain(std::iter::once(&id))
                .map(|p| {
                    p.file_name().map_or_else(
                        || p.display().to_string(),
                        |f| f.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            diags.push(
                Diagnostic::at(Code::BadInclude, span, format!("include cycle: {}", chain.join(" -> ")))
                    .label("includes a file that includes this one")
                    .help("remove one of the includes; a file may not include itself, directly or through others"),
            );
            continue;
        }
        if seen.contains(&id) {
            continue; // already part of the graph
        }
        if seen.len() >= MAX_FILES {
            diags.push(
                Diagnostic::at(
                    Code::BadInclude,
                    span,
                    format!("more than {MAX_FILES} files are included"),
                )
                .label("one too many")
                .help(format!(
                    "a graph reads at most {MAX_FILES} files: merge some of them into one"
                )),
            );
            return;
        }
        let loaded = SourceFile::load(&path);
        let total = source.text().len() as u64;
        let file = match loaded {
            Ok(f) if total + f.text().len() as u64 > crate::source::MAX_FILE_BYTES => {
                diags.push(
                    Diagnostic::at(
                        Code::BadInclude,
                        span,
                        format!("`{name}` would make the files larger than 32 MiB together"),
                    )
                    .label("too large"),
                );
                continue;
            }
            Ok(f) => f,
            Err(e) => {
                diags.push(
                    Diagnostic::at(
                        Code::BadInclude,
                        span,
                        format!("cannot include `{name}`: {e}"),
                    )
                    .label("this file")
                    .help("paths are relative to the directory of the file that includes them"),
                );
                continue;
            }
        };
        seen.push(id.clone());
        let added = source.append(path, file.text());
        stack.push(id);
        expand(source, added, stack, seen, diags);
        stack.pop();
    }
}

/// A diagnostic of one part, with spans moved into the whole text.
pub(super) fn shift(mut d: Diagnostic, by: usize) -> Diagnostic {
    let mv = |s: &mut std::ops::Range<usize>| *s = s.start + by..s.end + by;
    if let Some(s) = d.span.as_mut() {
        mv(s);
    }
    for (s, _) in &mut d.related {
        mv(s);
    }
    d
}

impl Decoder {
    /// Starts decoding part `index` of `source`.
    pub(super) fn enter_part(
        &mut self,
        index: usize,
        part: &crate::source::Part,
        source: &SourceFile,
    ) {
        self.part = part.range.clone();
        // Top-level tables may appear once per file.
        for key in ["version", "graph", "env", "vars", "include"] {
            self.seen.remove(key);
        }
        self.base = match part.path.parent() {
            Some(p) if index > 0 => p.to_path_buf(),
            _ => source.base_dir(),
        };
    }

    /// A name defined in two files.
    pub(super) fn defined_twice(&mut self, what: &str, span: Span, first: Span) {
        self.push(
            Diagnostic::at(
                Code::DuplicateName,
                span,
                format!("`{what}` is defined in two files"),
            )
            .label("defined again here")
            .related(first, "first defined here")
            .help(
                "rename one of them, or keep one definition; included files share one set of names",
            ),
        );
    }

    /// `[graph]` in an included file.
    pub(super) fn graph_in_include(&mut self, key: &toml::Spanned<std::borrow::Cow<'_, str>>) {
        self.push(
            Diagnostic::at(
                Code::BadInclude,
                self.at(key.span()),
                format!("an included file cannot set [{}]", key.as_ref()),
            )
            .label("in an included file")
            .help("move these settings to the main file: the graph's settings are the main file's"),
        );
    }

    /// Adds an `[env]` table to the graph's, reporting names set by two files.
    pub(super) fn merge_env(
        &mut self,
        into: &mut Vec<(Sp<String>, Sp<String>)>,
        env: Vec<(Sp<String>, Sp<String>)>,
    ) {
        for (k, v) in env {
            if let Some((first, _)) = into.iter().find(|(f, _)| f.value == k.value) {
                let first = first.span.clone();
                self.defined_twice(&format!("env.{}", k.value), k.span.clone(), first);
                continue;
            }
            into.push((k, v));
        }
    }
}
