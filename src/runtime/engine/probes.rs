//! Readiness probes: tcp, cmd, log and file, run from the loop without blocking it.

use super::*;

impl Engine<'_> {
    /// Runs the instance's readiness probe if it is due, and fails the attempt
    /// once the readiness timeout passed. Probing stops at the first success.
    pub(super) fn probe_if_due(&mut self, k: usize, now: Instant) {
        let i = &self.insts[k];
        let Some(due) = i.probe_due else { return };
        let Some(ready) = self.g.file.processes[i.proc].ready.as_ref() else {
            return;
        };
        if i.ready || i.stop.is_some() {
            return;
        }
        if i.attempt_start
            .is_some_and(|s| now >= later(s, ready.timeout))
        {
            let i = &mut self.insts[k];
            i.not_ready = true;
            i.probe_due = None;
            i.stop = Some(StopReason::NotReady);
            self.stop_pending.push(k);
            self.stop_probing(k);
            return;
        }
        if now < due {
            return;
        }
        self.insts[k].probe_due = Some(later(now, ready.interval));
        match &ready.probe.value {
            crate::spec::Probe::Log(_) => {} // lines are matched as they are read
            crate::spec::Probe::File(path) => {
                let cwd = self.launches[k]
                    .as_ref()
                    .map(|(l, _)| l.cwd.clone())
                    .unwrap_or_else(|| self.base.clone());
                let path = cwd.join(spawn::interpolate(path, self.insts[k].replica));
                if path.exists() {
                    self.set_ready(k);
                }
            }
            crate::spec::Probe::Tcp { host, port } => self.probe_tcp(k, host, *port),
            crate::spec::Probe::Cmd(argv) => {
                // Each run of the command gets at most max(interval, 1s).
                let limit = ready.interval.max(Duration::from_secs(1));
                self.probe_cmd(k, argv, limit, now);
            }
        }
    }

    /// Starts a non-blocking connect, one at a time; its result comes back as
    /// an event ([`Engine::on_tcp_probe`]).
    fn probe_tcp(&mut self, k: usize, host: &str, port: u16) {
        if self.tcp_probes.values().any(|(j, _)| *j == k) {
            return; // one connect in flight at a time
        }
        // Resolved once per instance (the lookup blocks), then reused.
        let addr = match self.tcp_addrs.get(&k) {
            Some(a) => *a,
            None => {
                use std::net::ToSocketAddrs;
                let Some(a) = (host, port)
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                else {
                    return;
                };
                self.tcp_addrs.insert(k, a);
                a
            }
        };
        if let Ok(mut stream) = mio::net::TcpStream::connect(addr) {
            let token = self.next_token;
            self.next_token += 1;
            if self
                .poll
                .registry()
                .register(&mut stream, Token(token), Interest::WRITABLE)
                .is_ok()
            {
                self.tcp_probes.insert(token, (k, stream));
            }
        }
    }

    /// Runs the probe command in its own group, with the instance's
    /// environment and cwd; a run still going after `limit` is killed and
    /// counts as not ready. Its exit comes back through the executor's reap.
    fn probe_cmd(&mut self, k: usize, argv: &[String], limit: Duration, now: Instant) {
        if self.insts[k].probe_pid != 0 {
            if self.insts[k]
                .probe_started
                .is_some_and(|t| now >= later(t, limit))
            {
                self.exec
                    .signal_group(self.insts[k].probe_pid, libc::SIGKILL);
            }
            return;
        }
        let Some((launch, _)) = &self.launches[k] else {
            return;
        };
        let mut probe = launch.clone();
        probe.argv = argv
            .iter()
            .map(|a| spawn::interpolate(a, self.insts[k].replica))
            .collect();
        let null = self.null.as_raw_fd();
        let fds = [
            (0, posix::Source::Fd(null)),
            (1, posix::Source::Fd(null)),
            (2, posix::Source::Fd(null)),
        ];
        if let Ok(pid) = Prepared::new(&probe).and_then(|prep| self.exec.spawn(&prep, &fds)) {
            self.insts[k].probe_pid = pid;
            self.insts[k].probe_started = Some(now);
            self.probe_pids.insert(pid, k);
            self.groups.push(Group { pgid: pid, inst: k });
        }
    }

    pub(super) fn on_tcp_probe(&mut self, token: usize) {
        let Some((k, mut stream)) = self.tcp_probes.remove(&token) else {
            return;
        };
        let _ = self.poll.registry().deregister(&mut stream);
        let connected = matches!(stream.take_error(), Ok(None)) && stream.peer_addr().is_ok();
        if !(connected && self.insts[k].phase == Phase::Running && !self.insts[k].ready) {
            return;
        }
        // Ready only if the listener is the instance's own, not another program's
        // on the same port; where /proc cannot tell, the connect is enough.
        let owned = self
            .tcp_addrs
            .get(&k)
            .and_then(|&addr| crate::runtime::sockets::listener_in_group(addr, self.insts[k].pgid));
        if owned == Some(false) {
            if !std::mem::replace(&mut self.insts[k].foreign_listener_noted, true) {
                let (name, addr) = (self.insts[k].name.clone(), self.tcp_addrs.get(&k).copied());
                let addr = addr.map(|a| a.to_string()).unwrap_or_default();
                self.reporter.note(
                    &format!("{name}: another program listens on {addr}; not ready until {name} itself does"),
                    true,
                );
            }
            return;
        }
        self.set_ready(k);
    }

    pub(super) fn set_ready(&mut self, k: usize) {
        let i = &mut self.insts[k];
        // Too late once the attempt failed readiness or is being stopped.
        if i.not_ready || i.stop.is_some() || i.phase != Phase::Running {
            return;
        }
        i.ready = true;
        i.ready_once = true;
        i.probe_due = None;
        let (name, pid, proc) = (i.name.clone(), i.pid, i.proc);
        let took = i.attempt_start.map(|t| t.elapsed()).unwrap_or_default();
        self.stop_probing(k);
        let what = match self.g.file.processes[proc]
            .ready
            .as_ref()
            .map(|r| &r.probe.value)
        {
            Some(crate::spec::Probe::Tcp { host, port }) => format!("tcp {host}:{port}"),
            Some(crate::spec::Probe::Cmd(argv)) => format!("cmd {}", argv.join(" ")),
            Some(crate::spec::Probe::Log(re)) => format!("log /{re}/"),
            Some(crate::spec::Probe::File(f)) => format!("file {f}"),
            None => String::new(),
        };
        self.reporter.instance_note(
            &name,
            &format!(
                "ready after {} ({what})",
                crate::runtime::report::fmt_duration(took)
            ),
        );
        self.emit(RunEvent::Ready {
            process: &name,
            pid,
        });
        self.mark_changed(proc);
    }

    /// Ends any probe of instance `k` still in flight.
    pub(super) fn stop_probing(&mut self, k: usize) {
        self.insts[k].probe_due = None;
        let pid = std::mem::take(&mut self.insts[k].probe_pid);
        if pid > 0 {
            self.exec.signal_group(pid, libc::SIGKILL);
        }
        let tokens: Vec<usize> = self
            .tcp_probes
            .iter()
            .filter(|(_, (j, _))| *j == k)
            .map(|(t, _)| *t)
            .collect();
        for t in tokens {
            if let Some((_, mut stream)) = self.tcp_probes.remove(&t) {
                let _ = self.poll.registry().deregister(&mut stream);
            }
        }
    }
}
