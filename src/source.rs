//! Reading a job file from disk, and mapping byte offsets to line and column.

use std::fmt;
use std::path::{Path, PathBuf};

/// Job files larger than this are refused before they are read: a job file is
/// written by people or generators, and 32 MiB holds several hundred thousand
/// processes. The cap keeps a stray `jobgraph validate big.log` from eating memory.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// A job file's text, with an index of where its lines start. A file with
/// `include`s holds the included files too, one after the other, each a
/// [`Part`]: a span is an offset into the whole, so it also names its file.
#[derive(Debug, Clone)]
pub struct SourceFile {
    path: PathBuf,
    text: String,
    line_starts: Vec<usize>,
    parts: Vec<Part>,
}

/// One file of a [`SourceFile`]: the main file first, then included files.
#[derive(Debug, Clone)]
pub struct Part {
    /// Byte range of this file in the whole text.
    pub range: std::ops::Range<usize>,
    /// The path as given, or as resolved from the including file.
    pub path: PathBuf,
    /// Index (0-based) of the file's first line in the whole text.
    first_line: usize,
}

/// Why a job file could not be read. Each renders as one line.
#[derive(Debug)]
pub enum LoadError {
    /// The OS refused to open or read the file.
    Io(PathBuf, std::io::Error),
    /// The path is a directory, FIFO, socket or device, not a regular file.
    NotAFile(PathBuf, &'static str),
    /// The file is larger than [`MAX_FILE_BYTES`].
    TooLarge(PathBuf, u64),
    /// The bytes are not UTF-8 (TOML requires it); line and column of the first bad byte.
    NotUtf8(PathBuf, usize, usize),
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Io(path, err) => {
                let why = match err.kind() {
                    std::io::ErrorKind::NotFound => "no such file".to_string(),
                    std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                    _ => err.to_string(),
                };
                write!(f, "cannot read {}: {why}", path.display())
            }
            LoadError::NotAFile(path, what) => {
                write!(f, "cannot read {}: it is a {what}, not a job file", path.display())
            }
            LoadError::TooLarge(path, size) => write!(
                f,
                "cannot read {}: it is {:.1} MiB, and job files are limited to {} MiB",
                path.display(),
                *size as f64 / (1024.0 * 1024.0),
                MAX_FILE_BYTES / (1024 * 1024)
            ),
            LoadError::NotUtf8(path, line, col) => write!(
                f,
                "cannot read {}:{line}:{col}: the file is not UTF-8 text (TOML files must be UTF-8)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LoadError {}

/// The byte order mark some editors put first in a UTF-8 file.
const BOM: &str = "\u{feff}";

impl SourceFile {
    /// Reads a job file, refusing anything that is not a regular UTF-8 file of
    /// reasonable size. Never blocks on a FIFO: the type is checked before opening.
    pub fn load(path: &Path) -> Result<SourceFile, LoadError> {
        let meta = std::fs::metadata(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?;
        let ft = meta.file_type();
        if !ft.is_file() {
            use std::os::unix::fs::FileTypeExt;
            let what = if ft.is_dir() {
                "directory"
            } else if ft.is_fifo() {
                "FIFO"
            } else if ft.is_socket() {
                "socket"
            } else if ft.is_block_device() || ft.is_char_device() {
                "device"
            } else {
                "special file"
            };
            return Err(LoadError::NotAFile(path.to_path_buf(), what));
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge(path.to_path_buf(), meta.len()));
        }
        let mut bytes = std::fs::read(path).map_err(|e| LoadError::Io(path.to_path_buf(), e))?;
        // A byte order mark is no part of the text: columns on line 1 count without it.
        if bytes.starts_with(BOM.as_bytes()) {
            bytes.drain(..BOM.len());
        }
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(LoadError::TooLarge(path.to_path_buf(), bytes.len() as u64));
        }
        match String::from_utf8(bytes) {
            Ok(text) => Ok(SourceFile::new(path, text)),
            Err(err) => {
                let good = err.utf8_error().valid_up_to();
                let bytes = err.into_bytes();
                // The valid prefix is UTF-8 by definition, so the lossy view is exact.
                let prefix = String::from_utf8_lossy(&bytes[..good]).into_owned();
                let probe = SourceFile::new(path, prefix);
                let (line, col) = probe.line_col(good);
                Err(LoadError::NotUtf8(path.to_path_buf(), line, col))
            }
        }
    }

    /// Wraps text already in memory (tests, stdin, generated files).
    pub fn new(path: impl Into<PathBuf>, mut text: String) -> SourceFile {
        if text.starts_with(BOM) {
            text.drain(..BOM.len());
        }
        let mut line_starts = vec![0];
        line_starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        let path = path.into();
        SourceFile {
            parts: vec![Part {
                range: 0..text.len(),
                path: path.clone(),
                first_line: 0,
            }],
            path,
            text,
            line_starts,
        }
    }

    /// Appends an included file; returns its index in [`SourceFile::parts`].
    pub fn append(&mut self, path: PathBuf, text: &str) -> usize {
        let text = text.strip_prefix(BOM).unwrap_or(text);
        if !self.text.is_empty() && !self.text.ends_with('\n') {
            self.text.push('\n');
            self.line_starts.push(self.text.len());
        }
        let start = self.text.len();
        let first_line = self.line_starts.len() - 1;
        self.text.push_str(text);
        self.line_starts
            .extend(text.match_indices('\n').map(|(i, _)| start + i + 1));
        self.parts.push(Part {
            range: start..self.text.len(),
            path,
            first_line,
        });
        self.parts.len() - 1
    }

    /// The main file, then each included file.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The file that holds byte `offset`.
    pub fn part_at(&self, offset: usize) -> &Part {
        let i = self.parts.partition_point(|p| p.range.start <= offset);
        &self.parts[i.saturating_sub(1)]
    }

    /// The path of the file that holds byte `offset`.
    pub fn path_at(&self, offset: usize) -> &Path {
        &self.part_at(offset).path
    }

    /// The path as given by the user (the main file).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The whole text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// 1-based line and column (in characters) of a byte offset, in the
    /// file that holds it (see [`SourceFile::path_at`]).
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self.global_line(offset) - 1;
        let start = self.line_starts[line];
        let mut end = offset;
        while !self.text.is_char_boundary(end) {
            end -= 1;
        }
        let col = self.text[start..end].chars().count() + 1;
        (line + 1 - self.part_at(offset).first_line, col)
    }

    /// 1-based line of a byte offset in the whole text (all parts), as
    /// [`SourceFile::line_range`] takes it.
    pub fn global_line(&self, offset: usize) -> usize {
        let offset = offset.min(self.text.len());
        match self.line_starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    /// The byte range of a 1-based line of the whole text, without its line break.
    pub fn line_range(&self, line: usize) -> Option<std::ops::Range<usize>> {
        let start = *self.line_starts.get(line.checked_sub(1)?)?;
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |&next| next - 1);
        Some(start..end.max(start))
    }

    /// The directory relative paths in the file are resolved against.
    pub fn base_dir(&self) -> PathBuf {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_counts_from_one_and_in_characters() {
        let f = SourceFile::new("x.toml", "ab\nçd\n".to_string());
        assert_eq!(f.line_col(0), (1, 1));
        assert_eq!(f.line_col(1), (1, 2));
        assert_eq!(f.line_col(3), (2, 1));
        assert_eq!(f.line_col(5), (2, 2)); // after the two-byte 'ç'
        assert_eq!(f.line_col(100), (3, 1));
    }

    #[test]
    fn appended_files_count_lines_from_one() {
        let mut f = SourceFile::new("a.toml", "a\nb".to_string());
        let i = f.append("c.toml".into(), "x\ny\n");
        assert_eq!(i, 1);
        let start = f.parts()[1].range.start;
        assert_eq!(&f.text()[start..start + 1], "x");
        assert_eq!(f.line_col(start + 2), (2, 1));
        assert_eq!(f.path_at(start + 2), Path::new("c.toml"));
        assert_eq!(f.path_at(1), Path::new("a.toml"));
        assert_eq!(f.line_col(2), (2, 1));
    }
}
