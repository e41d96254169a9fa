//! Output: the processes' log pipes, read in bounded turns, and what goes to
//! the console and the event stream.

use super::*;

impl Engine<'_> {
    /// Tells the reporter of `e`, after what the core decided before it.
    pub(super) fn emit(&mut self, e: RunEvent<'_>) {
        self.apply();
        self.reporter.event(&e);
    }

    pub(super) fn update_progress(&mut self) {
        if !self.reporter.wants_progress() {
            return;
        }
        let now = Instant::now();
        if now < self.progress_due {
            return;
        }
        self.progress_due = now + Duration::from_millis(100);
        // The longest-running instances, named when the terminal has room.
        let mut longest: Vec<(Instant, InstId)> = self
            .core
            .active
            .iter()
            .filter_map(|&k| self.core.insts[k].running()?.start.map(|t| (t, k)))
            .collect();
        longest.sort_unstable();
        let names: Vec<&str> = longest
            .iter()
            .take(3)
            .filter(|(t, _)| now.saturating_duration_since(*t) >= Duration::from_secs(1))
            .map(|&(_, k)| self.core.insts[k].name.as_str())
            .collect();
        self.reporter.progress(Progress {
            done: self.core.done_count,
            running: self.core.running,
            failed: self.core.failed_count,
            longest: &names,
        });
    }

    /// Notes that an output pipe has data; it is read by [`Engine::serve_output`].
    pub(super) fn queue_read(&mut self, token: usize) {
        if let Some(pipe) = self.sources.pipe_mut(token) {
            if !std::mem::replace(&mut pipe.queued, true) {
                self.readable.push(token);
            }
        }
    }

    /// Reads the output pipes with data, a bounded turn each, unless the
    /// console is backlogged: then they wait (and their writers block on a
    /// full pipe) until a writer wakes the loop.
    pub(super) fn serve_output(&mut self) {
        if self.readable.is_empty() {
            return;
        }
        let backlogged = self.reporter.backlogged();
        for t in std::mem::take(&mut self.readable) {
            let Some(k) = self.sources.pipe(t).map(|p| p.inst) else {
                continue;
            };
            // A process that exited has at most a pipe's worth left: read it, so
            // its end is seen at once and not after the drain timeout. One whose
            // `log` readiness is still awaited is read too, or a line printed on
            // time would be seen only once the console caught up (or never).
            if backlogged && !self.served_while_backlogged(k) {
                self.readable.push(t);
                continue;
            }
            // Served while backlogged, a draining pipe gets one pipe's worth
            // (64 KiB) per drain: a leftover that writes on (`yes &`) must not
            // fill the engine's memory behind a stalled reader.
            let limit = match backlogged {
                true => {
                    let Some(pipe) = self.sources.pipe_mut(t) else {
                        continue;
                    };
                    let left = BACKLOGGED_DRAIN.saturating_sub(pipe.read_backlogged);
                    if left == 0 {
                        self.readable.push(t);
                        continue;
                    }
                    pipe.read_backlogged += left;
                    left
                }
                false => READ_TURN,
            };
            if let Some(pipe) = self.sources.pipe_mut(t) {
                pipe.queued = false;
            }
            if self.read_pipe(t, limit) {
                self.queue_read(t);
            }
        }
        self.reporter.flush();
    }

    /// Whether instance `k`'s output is read while the console is backlogged:
    /// it exited (its end is waited for), or its `log` readiness is awaited.
    fn served_while_backlogged(&self, k: InstId) -> bool {
        let i = &self.core.insts[k];
        matches!(i.phase, Phase::Draining { .. })
            || (self.log_probes[i.proc].is_some() && i.attempt().is_some_and(|a| !a.probing.ready))
    }

    /// Whether a pipe waiting in `readable` is served while backlogged.
    pub(super) fn served_pipe_waits(&self) -> bool {
        self.readable.iter().any(|&t| {
            self.sources
                .pipe(t)
                .is_some_and(|p| self.served_while_backlogged(p.inst))
        })
    }

    /// Reports each new write error of the console, logs or events once; the
    /// run then exits non-zero.
    pub(super) fn report_output_errors(&mut self) {
        let errors = self.reporter.take_errors();
        for e in errors {
            self.output_failed = true;
            self.note(&e, true);
        }
    }

    /// Reads up to `limit` bytes; returns true if the pipe may hold more.
    pub(super) fn read_pipe(&mut self, token: usize, limit: usize) -> bool {
        // One buffer for every read: zeroing 64 KiB per call was most of the
        // engine's work per process in a chain of short ones.
        let mut chunk = std::mem::take(&mut self.read_buf);
        if chunk.len() < READ_CHUNK {
            chunk = vec![0; READ_CHUNK];
        }
        let more = self.read_pipe_into(token, limit, &mut chunk);
        self.read_buf = chunk;
        more
    }

    fn read_pipe_into(&mut self, token: usize, limit: usize, chunk: &mut [u8]) -> bool {
        let mut taken = 0;
        loop {
            if taken >= limit {
                return true;
            }
            let Some(pipe) = self.sources.pipe_mut(token) else {
                return false;
            };
            match pipe.file.read(chunk) {
                Ok(0) => {
                    self.close_pipe(token);
                    return false;
                }
                Ok(n) => {
                    taken += n;
                    pipe.buf.extend_from_slice(&chunk[..n]);
                    let k = pipe.inst;
                    let mut lines = Vec::new();
                    let mut start = 0;
                    for (at, b) in pipe.buf.iter().enumerate() {
                        if *b == b'\n' {
                            lines.push(start..at);
                            start = at + 1;
                        }
                    }
                    let buf = std::mem::take(&mut pipe.buf);
                    // A detached pipe's lines are a leftover's, not the attempt's.
                    let probing = !pipe.detached
                        && self.log_probes[self.core.insts[k].proc].is_some()
                        && self.core.insts[k]
                            .attempt()
                            .is_some_and(|a| !a.probing.ready);
                    let mut matched = false;
                    for r in lines {
                        let line = &buf[r];
                        let line = line.strip_suffix(b"\r").unwrap_or(line);
                        // A line that grew past MAX_LINE since the last read is
                        // cut as one that is already that long: the pieces do
                        // not depend on how the pipe's reads fell.
                        let mut piece = line;
                        while piece.len() > MAX_LINE {
                            let (head, tail) = piece.split_at(cut(piece));
                            self.reporter
                                .line(k.index(), &self.core.insts[k].name, head);
                            piece = tail;
                        }
                        self.reporter
                            .line(k.index(), &self.core.insts[k].name, piece);
                        if probing && !matched {
                            if let Some(re) = &self.log_probes[self.core.insts[k].proc] {
                                matched = re.is_match(&String::from_utf8_lossy(line));
                            }
                        }
                    }
                    if matched && self.core.insts[k].is_running() {
                        self.set_ready(k);
                    }
                    let mut rest = buf[start..].to_vec();
                    while rest.len() > MAX_LINE {
                        let tail = rest.split_off(cut(&rest));
                        self.reporter
                            .line(k.index(), &self.core.insts[k].name, &rest);
                        rest = tail;
                    }
                    if let Some(pipe) = self.sources.pipe_mut(token) {
                        pipe.buf = rest;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close_pipe(token);
                    return false;
                }
            }
        }
    }

    pub(super) fn close_pipe(&mut self, token: usize) {
        let Some(pipe) = self.sources.remove_pipe(token) else {
            return;
        };
        let _ = self
            .poll
            .registry()
            .deregister(&mut SourceFd(&pipe.file.as_raw_fd()));
        // Its descriptor is free again.
        self.resource_wait = None;
        let k = pipe.inst;
        if !pipe.buf.is_empty() {
            self.reporter
                .line(k.index(), &self.core.insts[k].name, &pipe.buf);
        }
        if !pipe.detached && self.core.pipe_closed(k) {
            self.attempt_end(k);
        }
    }

    /// The drain of `k`'s attempt is over, but a leftover process holds its
    /// output open: the attempt no longer waits for end-of-file, and the
    /// pipe stays open and read (see `Pipe::detached`).
    pub(super) fn detach_pipes_of(&mut self, k: InstId) {
        // Each holds a descriptor for as long as its leftover lives: past a
        // cap (an eighth of the descriptor limit, at most 256), the pipe is
        // closed as it used to be, so that launches keep their descriptors.
        let cap = detached_cap();
        // Behind a stalled reader, what is in the pipe stays there.
        let turn = match self.reporter.backlogged() {
            true => 0,
            false => READ_TURN,
        };
        for t in self.sources.pipes_of(k) {
            if self.sources.detached_pipes().len() >= cap {
                self.read_pipe(t, turn);
                self.close_pipe(t);
                continue;
            }
            // Bounded: a leftover grandchild may write for ever.
            self.read_pipe(t, turn);
            // Still there unless that read reached end-of-file.
            if let Some(pipe) = self.sources.pipe_mut(t) {
                pipe.detached = true;
                self.core.pipe_closed(k);
            }
        }
    }

    /// What the leftovers wrote to detached pipes, read before they are
    /// stopped and once more after: up to 4 MiB each, for one may write
    /// for ever.
    pub(super) fn read_detached(&mut self) {
        for t in self.sources.detached_pipes() {
            for _ in 0..16 {
                // Not behind a stalled reader: each turn would stay in memory.
                if self.reporter.backlogged() || !self.read_pipe(t, READ_TURN) {
                    break;
                }
            }
        }
        self.reporter.flush();
    }
}

/// Most detached pipes kept at once (see `Engine::detach_pipes_of`).
fn detached_cap() -> usize {
    let soft = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft);
    usize::try_from(soft / 8).unwrap_or(256).min(256)
}

/// Where a piece of an over-long line (more than [`MAX_LINE`] bytes) ends:
/// at `MAX_LINE`, or up to 3 bytes before so as not to split a UTF-8
/// character (text that is not UTF-8 there is cut at `MAX_LINE`).
fn cut(line: &[u8]) -> usize {
    let continuation = |at: usize| line.get(at).is_some_and(|b| b & 0xC0 == 0x80);
    (MAX_LINE - 3..=MAX_LINE)
        .rev()
        .find(|&at| !continuation(at))
        .unwrap_or(MAX_LINE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_line_is_cut_between_utf8_characters() {
        let line = "é".repeat(MAX_LINE); // two bytes each
        let at = cut(line.as_bytes());
        assert_eq!(at, MAX_LINE);
        let line = format!("x{}", "é".repeat(MAX_LINE));
        let at = cut(line.as_bytes());
        assert_eq!(at, MAX_LINE - 1);
        assert!(std::str::from_utf8(&line.as_bytes()[..at]).is_ok());
        let line = format!("xy{}", "😀".repeat(MAX_LINE / 4 + 1));
        let at = cut(line.as_bytes());
        assert!(std::str::from_utf8(&line.as_bytes()[..at]).is_ok());
        assert!(at >= MAX_LINE - 3);
        let bytes = vec![0x80u8; MAX_LINE + 5]; // not UTF-8: cut where it falls
        assert_eq!(cut(&bytes), MAX_LINE);
    }
}
