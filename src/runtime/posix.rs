//! Launching with `posix_spawn` directly.
//!
//! `std::process::Command` rebuilds the environment map and its C strings on
//! every spawn, and can place a descriptor only on 0, 1 and 2 without falling
//! back from posix_spawn to fork (`pre_exec`). A job file launches the same
//! instance many times (replicas, retries) and stream edges need descriptors
//! at 3, 4, …, so argv, envp and the resolved program are prepared once per
//! instance and each launch is a single `posix_spawn` (vfork + exec in glibc).

use super::spawn::Launch;
use std::ffi::{CStr, CString, OsStr};
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An instance's launch in C form, built once.
pub struct Prepared {
    program: CString,
    argv: Vec<CString>,
    envp: Vec<CString>,
    cwd: CString,
}

impl Prepared {
    /// The program exec is given: as written when it has a `/` (relative to
    /// the working directory), else where it was found on PATH.
    pub fn program_path(&self) -> std::path::PathBuf {
        let program = Path::new(OsStr::from_bytes(self.program.as_bytes()));
        Path::new(OsStr::from_bytes(self.cwd.as_bytes())).join(program)
    }

    /// The arguments, as text (for executors that do not exec locally, and tests).
    pub fn args(&self) -> Vec<String> {
        self.argv
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    /// The program as resolved (an absolute or relative path), as text.
    pub fn program(&self) -> String {
        self.program.to_string_lossy().into_owned()
    }

    /// The environment, as `KEY=VALUE` text.
    pub fn env(&self) -> Vec<String> {
        self.envp
            .iter()
            .map(|e| e.to_string_lossy().into_owned())
            .collect()
    }

    /// The value of one environment variable, if set.
    pub fn env_var(&self, key: &str) -> Option<String> {
        self.envp.iter().find_map(|e| {
            let e = e.to_bytes();
            (e.len() > key.len() && e.starts_with(key.as_bytes()) && e[key.len()] == b'=')
                .then(|| String::from_utf8_lossy(&e[key.len() + 1..]).into_owned())
        })
    }

    /// Program, argv, envp and working directory, as C strings.
    pub fn c_parts(&self) -> (&CStr, &[CString], &[CString], &CStr) {
        (&self.program, &self.argv, &self.envp, &self.cwd)
    }

    /// The working directory.
    pub fn cwd(&self) -> std::path::PathBuf {
        std::path::PathBuf::from(std::ffi::OsStr::from_bytes(self.cwd.to_bytes()))
    }

    /// The same environment and working directory with another program and
    /// argv (an executor that wraps the command, e.g. in `srun`).
    pub fn wrapped(&self, program: &str, argv: &[String]) -> io::Result<Prepared> {
        Ok(Prepared {
            program: cstring(program.as_bytes(), "the program name")?,
            argv: argv
                .iter()
                .map(|a| cstring(a.as_bytes(), "an argument"))
                .collect::<io::Result<_>>()?,
            envp: self.envp.clone(),
            cwd: self.cwd.clone(),
        })
    }
}

fn cstring(bytes: &[u8], what: &str) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{what} contains a NUL byte"),
        )
    })
}

impl Prepared {
    /// Resolves the program against the child's own PATH (as exec would in the
    /// child, not with the engine's PATH) and converts everything to C strings.
    pub fn new(launch: &Launch) -> io::Result<Prepared> {
        let first = launch
            .argv
            .first()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "empty command"))?;
        let program = if first.contains('/') {
            cstring(first.as_bytes(), "the program name")?
        } else {
            let path = launch
                .env
                .iter()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.as_os_str());
            let found = search_path(first, path, &launch.cwd).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("`{first}` is not found on the process's PATH"),
                )
            })?;
            cstring(found.as_os_str().as_bytes(), "the program path")?
        };
        let argv = launch
            .argv
            .iter()
            .map(|a| cstring(a.as_bytes(), "an argument"))
            .collect::<io::Result<_>>()?;
        let mut envp = Vec::with_capacity(launch.env.len());
        for (k, v) in &launch.env {
            let mut kv = Vec::with_capacity(k.len() + v.len() + 1);
            kv.extend_from_slice(k.as_bytes());
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstring(&kv, "an environment variable")?);
        }
        let cwd = cstring(launch.cwd.as_os_str().as_bytes(), "the working directory")?;
        Ok(Prepared {
            program,
            argv,
            envp,
            cwd,
        })
    }
}

fn search_path(program: &str, path: Option<&OsStr>, cwd: &Path) -> Option<std::path::PathBuf> {
    let path = path.unwrap_or(OsStr::new("/usr/local/bin:/usr/bin:/bin"));
    for dir in path.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = if dir.is_absolute() {
            dir.join(program)
        } else {
            cwd.join(dir).join(program)
        };
        if let Ok(c) = CString::new(candidate.as_os_str().as_bytes()) {
            // SAFETY: access() only reads the NUL-terminated path.
            let executable = unsafe { libc::access(c.as_ptr(), libc::X_OK) } == 0;
            if executable && candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// Where a child descriptor comes from.
#[derive(Debug, Clone, Copy)]
pub enum Source {
    /// Keep the engine's own descriptor of that number.
    Inherit,
    /// Duplicate this engine descriptor onto it.
    Fd(RawFd),
}

/// Spawns `prep` in a new process group, every signal at its default and none
/// blocked, with `fds[n]` as descriptor `n`. Descriptors in `fds` must be
/// close-on-exec in the engine and must not be numbers the list assigns.
pub fn spawn(prep: &Prepared, fds: &[(i32, Source)]) -> io::Result<i32> {
    let mut argv: Vec<*mut libc::c_char> = prep.argv.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv.push(std::ptr::null_mut());
    let mut envp: Vec<*mut libc::c_char> = prep.envp.iter().map(|e| e.as_ptr() as *mut _).collect();
    envp.push(std::ptr::null_mut());
    // SAFETY: every pointer handed to libc is valid for the duration of the
    // calls (C strings and arrays owned above); the attribute and
    // file-action objects are initialised before use and destroyed after.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        let mut attr: libc::posix_spawnattr_t = std::mem::zeroed();
        check(libc::posix_spawn_file_actions_init(&mut actions))?;
        if let Err(e) = check(libc::posix_spawnattr_init(&mut attr)) {
            libc::posix_spawn_file_actions_destroy(&mut actions);
            return Err(e);
        }
        let result = (|| {
            for &(target, source) in fds {
                if let Source::Fd(fd) = source {
                    check(libc::posix_spawn_file_actions_adddup2(
                        &mut actions,
                        fd,
                        target,
                    ))?;
                }
            }
            check(libc::posix_spawn_file_actions_addchdir_np(
                &mut actions,
                prep.cwd.as_ptr(),
            ))?;
            let mut none: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut none);
            // Every bit set by hand: glibc's sigfillset leaves out its two
            // internal signals (32, 33), and posix_spawn then starts the
            // child with them ignored, which survives exec.
            let mut all: libc::sigset_t = std::mem::zeroed();
            std::ptr::write_bytes(
                std::ptr::addr_of_mut!(all).cast::<u8>(),
                0xff,
                std::mem::size_of::<libc::sigset_t>(),
            );
            check(libc::posix_spawnattr_setsigmask(&mut attr, &none))?;
            check(libc::posix_spawnattr_setsigdefault(&mut attr, &all))?;
            check(libc::posix_spawnattr_setpgroup(&mut attr, 0))?;
            let flags = libc::POSIX_SPAWN_SETPGROUP
                | libc::POSIX_SPAWN_SETSIGMASK
                | libc::POSIX_SPAWN_SETSIGDEF;
            check(libc::posix_spawnattr_setflags(
                &mut attr,
                flags as libc::c_short,
            ))?;
            let mut pid: libc::pid_t = 0;
            check(libc::posix_spawn(
                &mut pid,
                prep.program.as_ptr(),
                &actions,
                &attr,
                argv.as_ptr(),
                envp.as_ptr(),
            ))?;
            Ok(pid)
        })();
        libc::posix_spawnattr_destroy(&mut attr);
        libc::posix_spawn_file_actions_destroy(&mut actions);
        result
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(rc))
    }
}
