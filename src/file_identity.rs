//! A file as the filesystem knows it, so that two spellings, a symlink or a
//! hard link of one file compare equal; and matching a process's output path
//! template (`out-{replica}.log`) against such a file. Used to refuse an
//! output that would overwrite the job file, the journal or the events.

use std::path::{Path, PathBuf};

/// What `{replica}` in an output path becomes, per instance.
const REPLICA: &str = "{replica}";

/// A file's device and inode when it exists (a hard link is the same file),
/// and its absolute path with links resolved.
#[derive(Debug, Clone)]
pub struct Identity {
    /// Absolute, with the links that exist resolved.
    pub path: PathBuf,
    /// Device and inode, when the file exists.
    pub inode: Option<(u64, u64)>,
}

impl PartialEq for Identity {
    fn eq(&self, other: &Identity) -> bool {
        match (self.inode, other.inode) {
            (Some(a), Some(b)) => a == b,
            _ => self.path == other.path,
        }
    }
}

/// `p` as an absolute path with its directory's links resolved, so that two
/// spellings of one file compare equal (the file itself need not exist),
/// and its inode when it exists, so that two hard links do too.
pub fn identity(p: &Path) -> Identity {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    let mut abs = std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
    // A symbolic link to a file not made yet is that file (canonicalize
    // below resolves only what exists).
    for _ in 0..40 {
        let Ok(target) = std::fs::read_link(&abs) else {
            break;
        };
        abs = match abs.parent() {
            Some(dir) => dir.join(target),
            None => target,
        };
    }
    let path = if let Ok(real) = abs.canonicalize() {
        real
    } else {
        match (abs.parent(), abs.file_name()) {
            (Some(dir), Some(name)) => dir
                .canonicalize()
                .map_or_else(|_| abs.clone(), |d| d.join(name)),
            _ => abs,
        }
    };
    Identity { path, inode }
}

/// Whether some instance of a process writing to `template` (with
/// `{replica}` for the replica's number, `replicas` of them) writes to
/// `file`. Without `{replica}` this is `identity(template) == file`; with it,
/// the file's name (or, when `{replica}` is in a directory, its whole path)
/// is matched against the template, without making a path per replica.
pub fn template_hits(template: &Path, replicas: u32, file: &Identity) -> bool {
    let text = template.to_string_lossy();
    if !text.contains(REPLICA) {
        return identity(template) == *file;
    }
    let (dir, name) = match (template.parent(), template.file_name()) {
        (Some(d), Some(n)) => (d, n.to_string_lossy()),
        _ => return false,
    };
    if !dir.to_string_lossy().contains(REPLICA) {
        let (Some(fdir), Some(fname)) = (file.path.parent(), file.path.file_name()) else {
            return false;
        };
        return identity(dir).path == fdir && fills(&name, replicas, &fname.to_string_lossy());
    }
    let abs = std::path::absolute(template).unwrap_or_else(|_| template.to_path_buf());
    fills(
        &abs.to_string_lossy(),
        replicas,
        &file.path.to_string_lossy(),
    )
}

/// Whether `text` is `pattern` with every `{replica}` replaced by one
/// number below `replicas`.
fn fills(pattern: &str, replicas: u32, text: &str) -> bool {
    let Some(at) = pattern.find(REPLICA) else {
        return pattern == text;
    };
    if !text.starts_with(&pattern[..at]) {
        return false;
    }
    let digits = text[at..].bytes().take_while(u8::is_ascii_digit).count();
    // The number may run into digits that follow `{replica}`: each length is tried.
    (1..=digits.min(10)).any(|len| {
        text[at..at + len]
            .parse::<u32>()
            .is_ok_and(|r| r < replicas && pattern.replace(REPLICA, &r.to_string()) == text)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_template_matches_the_files_of_its_replicas_only() {
        assert!(fills("out-{replica}.log", 3, "out-2.log"));
        assert!(!fills("out-{replica}.log", 3, "out-3.log"));
        assert!(!fills("out-{replica}.log", 3, "out-.log"));
        assert!(fills("{replica}{replica}.x", 20, "1111.x"));
        assert!(!fills("{replica}{replica}.x", 20, "12.x"));
        assert!(fills("a{replica}1", 10, "a31"));
        assert!(fills("plain", 1, "plain"));
    }

    #[test]
    fn two_spellings_a_symlink_and_a_hard_link_are_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, "").unwrap();
        let hard = dir.path().join("h");
        std::fs::hard_link(&f, &hard).unwrap();
        let soft = dir.path().join("s");
        std::os::unix::fs::symlink(&f, &soft).unwrap();
        let f_id = identity(&f);
        assert_eq!(identity(&dir.path().join("./f")), f_id);
        assert_eq!(identity(&hard), f_id);
        assert_eq!(identity(&soft), f_id);
        assert!(template_hits(
            &dir.path().join("{replica}"),
            1,
            &identity(&dir.path().join("0"))
        ));
        let job = dir.path().join("job-1.toml");
        std::fs::write(&job, "").unwrap();
        assert!(template_hits(
            &dir.path().join("job-{replica}.toml"),
            2,
            &identity(&job)
        ));
        assert!(!template_hits(
            &dir.path().join("job-{replica}.toml"),
            1,
            &identity(&job)
        ));
    }
}
