//! Batch mode: one `sbatch` job per unit, its output followed from files,
//! its state from one `squeue` per tick for all units.

use super::*;

/// One copy of a batch job's output file into the unit's descriptor.
#[derive(Debug)]
pub(super) struct Follow {
    pub(super) path: PathBuf,
    pub(super) file: Option<File>,
    pub(super) sink: Option<OwnedFd>,
    pub(super) buf: Vec<u8>,
}

impl Follow {
    /// Copies what is new; true when everything written so far is delivered.
    pub(super) fn pump(&mut self) -> bool {
        let Some(sink) = &self.sink else {
            return true;
        };
        if self.file.is_none() {
            self.file = File::open(&self.path).ok();
        }
        let mut budget: usize = 256 * 1024;
        loop {
            while !self.buf.is_empty() {
                // SAFETY: writing from our buffer to a descriptor we own.
                let n = unsafe {
                    libc::write(sink.as_raw_fd(), self.buf.as_ptr().cast(), self.buf.len())
                };
                if n < 0 {
                    let e = io::Error::last_os_error();
                    match e.kind() {
                        io::ErrorKind::Interrupted => continue,
                        io::ErrorKind::WouldBlock => return false,
                        // The reader is gone (EPIPE): nothing to deliver to.
                        _ => {
                            self.buf.clear();
                            self.sink = None;
                            return true;
                        }
                    }
                }
                self.buf.drain(..n as usize);
            }
            let Some(file) = &mut self.file else {
                return true;
            };
            if budget == 0 {
                return false;
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match file.read(&mut chunk) {
                Ok(0) | Err(_) => return true,
                Ok(n) => {
                    budget = budget.saturating_sub(n);
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

#[derive(Debug)]
pub(super) struct BatchUnit {
    pub(super) job: String,
    /// Squeue's compact state at the last tick ("PD", "R", …).
    pub(super) state: String,
    pub(super) status: PathBuf,
    pub(super) out: Follow,
    pub(super) err: Follow,
    /// The signal of a cancel we asked for (a job without status then ended by it).
    pub(super) cancelled: Option<i32>,
    /// Seen gone from the queue (or in an end state), since.
    pub(super) gone_since: Option<Instant>,
    /// How it ended, once known; reaped when its output is delivered.
    pub(super) exit: Option<Exit>,
    /// Its start was reported (a `running` placement).
    pub(super) started: bool,
}

impl Slurm {
    pub(super) fn wrapper_args(&self, status: &str, prepared: &Prepared) -> Vec<String> {
        let mut v = vec![
            self.wrapper.display().to_string(),
            self.heartbeat.display().to_string(),
            self.config.stale_secs.to_string(),
            status.to_string(),
            self.prefix.clone(),
            prepared.program(),
        ];
        v.extend(prepared.args().into_iter().skip(1));
        v
    }

    pub(super) fn spawn_batch(
        &mut self,
        unit_args: Vec<String>,
        instance: &str,
        job_name: &str,
        prepared: &Prepared,
        fds: &[(i32, Source)],
    ) -> io::Result<(UnitId, Kind)> {
        let attempt = {
            let a = self.attempts.entry(instance.to_string()).or_insert(0);
            *a += 1;
            *a
        };
        let stem = self.run_dir.join(format!("{job_name}.{attempt}"));
        let file = |ext: &str| PathBuf::from(format!("{}.{ext}", stem.display()));
        let (out_path, err_path, status) = (file("out"), file("err"), file("status"));
        let (out_sink, err_sink) = (sink(fds, 1)?, sink(fds, 2)?);
        let cwd = match prepared.cwd() {
            c if c.is_absolute() => c,
            c => std::env::current_dir()?.join(c),
        };
        let mut args = vec![
            "--parsable".to_string(),
            format!("--job-name={job_name}"),
            format!("--output={}", out_path.display()),
            format!("--error={}", err_path.display()),
            format!("--chdir={}", cwd.display()),
            "--ntasks=1".into(),
        ];
        args.extend(unit_args);
        args.extend(self.wrapper_args(&status.display().to_string(), prepared));
        let job = self.sbatch(&args, prepared, &cwd, job_name)?;
        let id = UnitId(self.next_batch_id);
        self.next_batch_id = self.next_batch_id.checked_add(1).unwrap_or(BATCH_ID_BASE);
        Ok((
            id,
            Kind::Batch(Box::new(BatchUnit {
                job,
                state: "PD".into(),
                status,
                out: Follow {
                    path: out_path,
                    file: None,
                    sink: out_sink,
                    buf: Vec::new(),
                },
                err: Follow {
                    path: err_path,
                    file: None,
                    sink: err_sink,
                    buf: Vec::new(),
                },
                cancelled: None,
                gone_since: None,
                exit: None,
                started: false,
            })),
        ))
    }

    /// Submits one job with the unit's environment; returns its job id.
    fn sbatch(
        &self,
        args: &[String],
        prepared: &Prepared,
        cwd: &Path,
        job_name: &str,
    ) -> io::Result<String> {
        let out = Command::new(&self.tools.sbatch)
            .args(args)
            .env_clear()
            .envs(prepared.env().iter().filter_map(|kv| kv.split_once('=')))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| SlurmError::Spawn {
                command: "sbatch".into(),
                source,
            })?;
        if !out.status.success() {
            return Err(SlurmError::Failed {
                command: format!("sbatch --job-name={job_name} …"),
                status: out.status,
                stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            }
            .into());
        }
        let text = String::from_utf8_lossy(&out.stdout);
        let job = text
            .trim()
            .split(';')
            .next()
            .filter(|j| !j.is_empty() && j.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| SlurmError::NoJobId(text.trim().to_string()))?;
        Ok(job.to_string())
    }

    /// One `squeue` call for every batch unit of the run; ends the units
    /// that left the queue; copies new output.
    pub(super) fn poll_batch(&mut self, now: Instant) {
        let any = self
            .units
            .values()
            .any(|u| matches!(&u.kind, Kind::Batch(b) if b.exit.is_none()));
        if any && now >= self.next_poll {
            self.next_poll = now + POLL_EVERY;
            self.squeue_calls += 1;
            let listed = command(
                &self.tools.squeue,
                &[
                    "-h".into(),
                    "-u".into(),
                    self.uid.to_string(),
                    "-o".into(),
                    "%i %t %N".into(),
                ],
            );
            match listed {
                Err(e) => eprintln!("jobgraph: slurm: {e} (retrying)"),
                Ok(text) => self.note_states(&text, now),
            }
        }
        let tick = self.next_poll > now; // a poll just happened
        self.settle_batch_units(tick, now);
        let ended: Vec<UnitId> = self
            .done
            .iter()
            .map(|r| r.id)
            .filter(|id| self.units.contains_key(id))
            .collect();
        for id in ended {
            self.forget(id);
        }
    }

    /// Takes in one `squeue` listing (`%i %t %N`): each job's state, its
    /// start (a `running` placement), and whether it is over.
    fn note_states(&mut self, text: &str, now: Instant) {
        let states: FxHashMap<&str, (&str, Option<&str>)> = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                let (id, state) = (w.next()?, w.next()?);
                Some((id, (state, w.next().filter(|n| *n != "(null)"))))
            })
            .collect();
        for (&id, u) in &mut self.units {
            let Kind::Batch(b) = &mut u.kind else {
                continue;
            };
            if b.exit.is_some() {
                continue;
            }
            let was_pending = b.state == "PD";
            let (over, node) = match states.get(b.job.as_str()) {
                Some(&(st, node)) => {
                    b.state = st.to_string();
                    (is_end_state(st), node.filter(|_| st != "PD"))
                }
                None => (true, None),
            };
            // Seen running, or over though no poll saw it run: it ran;
            // unless this run cancelled it while it waited, and it never started.
            let never_ran = over && was_pending && b.cancelled.is_some();
            let ran = !never_ran && (over || b.state != "PD");
            if ran && !std::mem::replace(&mut b.started, true) {
                self.placements.push_back(Placement {
                    id,
                    running: true,
                    job_id: b.job.clone(),
                    step_id: None,
                    node: node.map(str::to_string),
                });
            }
            if over {
                b.gone_since.get_or_insert(now);
            }
        }
    }

    /// Decides how the jobs that left the queue ended (their status files),
    /// copies new output, and reaps those whose output is all delivered.
    fn settle_batch_units(&mut self, tick: bool, now: Instant) {
        for (&id, u) in &mut self.units {
            let Kind::Batch(b) = &mut u.kind else {
                continue;
            };
            let busy = b.gone_since.is_some() || !b.out.buf.is_empty() || !b.err.buf.is_empty();
            if !tick && !busy {
                continue;
            }
            if b.exit.is_none() {
                if let Some(since) = b.gone_since {
                    b.exit = match std::fs::read_to_string(&b.status) {
                        Ok(s) if s.trim().parse::<i32>().is_ok() => {
                            Some(Exit::Code(s.trim().parse().unwrap_or(1)))
                        }
                        _ if b.cancelled.is_some() => b.cancelled.map(Exit::Signal),
                        _ if now.duration_since(since) >= STATUS_GRACE => {
                            eprintln!(
                                "jobgraph: slurm: job {} ({}) left the queue without an exit status (cancelled outside jobgraph, or its node failed)",
                                b.job, u.instance
                            );
                            Some(Exit::Signal(libc::SIGKILL))
                        }
                        _ => None,
                    };
                }
            }
            let delivered = b.out.pump() & b.err.pump();
            if let (Some(exit), true) = (b.exit, delivered) {
                let exit = match exit {
                    Exit::Code(c) if c > 128 && u.sent.contains(&(c - 128)) => {
                        Exit::Signal(c - 128)
                    }
                    other => other,
                };
                // Everything written is delivered: the engine sees EOF, then the end.
                b.out.sink = None;
                b.err.sink = None;
                self.done.push_back(Reaped {
                    id,
                    exit,
                    peak_rss_kib: 0,
                    relayed: None,
                });
            }
        }
    }
}

/// Squeue's compact states of a job that is over (or about to be).
fn is_end_state(st: &str) -> bool {
    matches!(
        st,
        "CG" | "CD" | "F" | "CA" | "TO" | "NF" | "OOM" | "BF" | "PR" | "DL"
    )
}

/// A copy of the unit's descriptor `target` (its stdout or stderr), where
/// the engine copies the job's output file. A pipe is made non-blocking: the
/// engine also reads it, on the same thread.
fn sink(fds: &[(i32, Source)], target: i32) -> io::Result<Option<OwnedFd>> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use std::os::fd::BorrowedFd;
    let src = match fds.iter().find(|(t, _)| *t == target) {
        Some((_, Source::Fd(fd))) => *fd,
        Some((_, Source::Inherit)) | None => target,
    };
    // SAFETY: the engine keeps `src` open through the call.
    let src = unsafe { BorrowedFd::borrow_raw(src) };
    let owned = src.try_clone_to_owned()?;
    let is_fifo =
        nix::sys::stat::fstat(&owned).is_ok_and(|st| (st.st_mode & libc::S_IFMT) == libc::S_IFIFO);
    if is_fifo {
        let flags = fcntl(&owned, FcntlArg::F_GETFL).map_err(io::Error::from)?;
        let flags = OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK;
        fcntl(&owned, FcntlArg::F_SETFL(flags)).map_err(io::Error::from)?;
    }
    Ok(Some(owned))
}
