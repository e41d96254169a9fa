//! The `--events` stream: each [`RunEvent`] as one NDJSON line, to a file or
//! through the console's stdout writer.

use super::writer::{Target, Wake, Writer, WriterHandle};
use crate::runtime::report::RunEvent;
use std::io::Write;
use std::time::{Duration, Instant, SystemTime};

/// The NDJSON shape of an event (see docs/commands.md, "Events").
pub(crate) fn ndjson<'a>(e: &RunEvent<'a>) -> Event<'a> {
    let mut out = Event {
        event: e.name(),
        ..Default::default()
    };
    match *e {
        RunEvent::Started {
            process,
            pid,
            attempt,
        } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.attempt = Some(attempt);
        }
        RunEvent::FailedToStart {
            process,
            attempt,
            reason,
        } => {
            out.process = Some(process);
            out.attempt = Some(attempt);
            out.reason = Some(reason);
        }
        RunEvent::Ready { process, pid } => {
            out.process = Some(process);
            out.pid = Some(pid);
        }
        RunEvent::Exited {
            process,
            pid,
            code,
            signal,
            ref duration,
            attempt,
            status,
            then,
        } => {
            out.process = Some(process);
            out.pid = pid;
            out.code = code;
            out.signal = signal;
            out.duration_ms = duration.as_ref().and_then(millis);
            out.attempt = Some(attempt);
            out.status = Some(status);
            out.then = then;
        }
        RunEvent::Retrying { process, attempt } => {
            out.process = Some(process);
            out.attempt = Some(attempt);
        }
        RunEvent::Restarting {
            process,
            attempt,
            ref delay,
        } => {
            out.process = Some(process);
            out.attempt = Some(attempt);
            out.duration_ms = millis(delay);
        }
        RunEvent::RunStarted { .. } | RunEvent::Queue { .. } | RunEvent::RunFinished { .. } => {
            run_fields(e, &mut out)
        }
        RunEvent::Placed {
            process,
            pid,
            state,
            job_id,
            step_id,
            node,
        } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.state = Some(state);
            out.job_id = Some(job_id);
            out.step_id = step_id;
            out.node = node;
        }
        // Listed, not `_`: a new kind of event must be given its fields.
        RunEvent::Skipped { .. }
        | RunEvent::Cached { .. }
        | RunEvent::Stopped { .. }
        | RunEvent::Joined { .. }
        | RunEvent::Stopping { .. }
        | RunEvent::Killed { .. }
        | RunEvent::HealthFailed { .. } => stop_fields(e, &mut out),
    }
    out
}

/// The fields of the run-level events.
fn run_fields<'a>(e: &RunEvent<'a>, out: &mut Event<'a>) {
    match *e {
        RunEvent::RunStarted { containment, pid } => {
            out.containment = Some(containment);
            out.pid = Some(pid);
        }
        RunEvent::Queue {
            queue,
            messages_in,
            messages_out,
            lost,
            requeued,
            per_consumer,
        } => {
            out.consumers = Some(per_consumer.iter().map(|(k, n)| (k.as_str(), *n)).collect());
            out.queue = Some(queue);
            out.messages_in = Some(messages_in);
            out.messages_out = Some(messages_out);
            out.lost = Some(lost);
            out.requeued = Some(requeued);
        }
        RunEvent::RunFinished {
            code,
            ref duration,
            engine_peak_rss_kib,
        } => {
            out.code = Some(code);
            out.duration_ms = millis(duration);
            out.engine_peak_rss_kib = Some(engine_peak_rss_kib);
        }
        _ => {}
    }
}

/// The fields of the events that end or stop an instance, or warn about it.
fn stop_fields<'a>(e: &RunEvent<'a>, out: &mut Event<'a>) {
    match *e {
        RunEvent::Skipped { process, reason } => {
            out.process = Some(process);
            out.status = Some("skipped");
            out.reason = Some(reason);
        }
        RunEvent::Cached { process } => {
            out.process = Some(process);
            out.status = Some("cached");
        }
        RunEvent::Stopped { process, reason } => {
            out.process = Some(process);
            out.status = Some("stopped");
            out.reason = Some(reason);
        }
        RunEvent::Joined {
            process,
            status,
            reason,
        } => {
            out.process = Some(process);
            out.status = Some(status);
            out.reason = reason;
        }
        RunEvent::Stopping {
            process,
            pid,
            signal,
        } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.signal = Some(signal);
        }
        RunEvent::Killed { process, pid } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.signal = Some("SIGKILL");
        }
        RunEvent::HealthFailed {
            process,
            pid,
            failures,
        } => {
            out.process = Some(process);
            out.pid = Some(pid);
            out.failures = Some(failures);
        }
        _ => {}
    }
}

/// A duration in whole milliseconds, for `duration_ms`.
fn millis(d: &Duration) -> Option<u64> {
    Some(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One NDJSON event (see docs/commands.md, "Events").
#[derive(Debug, Default, serde::Serialize)]
pub struct Event<'a> {
    /// RFC 3339 UTC timestamp with milliseconds.
    pub ts: String,
    /// started, ready, exited, retrying, skipped, stopping, killed, failed-to-start, run-finished.
    pub event: &'a str,
    /// Instance name (`worker[2]`), absent for run-level events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub process: Option<&'a str>,
    /// Process id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    /// Exit code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<i32>,
    /// Signal name that ended or is sent to the process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<&'a str>,
    /// Run time of the attempt, or of the whole run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Attempt number, from 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    /// Final status for `exited` and `skipped` (ok, failed, timed out, skipped, stopped).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    /// `exited`: `retry` or `restart` when another attempt follows (absent
    /// on the instance's last exit).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub then: Option<&'a str>,
    /// Why, in words (skips, start failures).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
    /// Queue name (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<&'a str>,
    /// Messages read from producers (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_in: Option<u64>,
    /// Messages delivered to consumers (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_out: Option<u64>,
    /// Messages lost in flight (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<u64>,
    /// Messages a consumer left unread, put back in the queue (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requeued: Option<u64>,
    /// Messages delivered to each consumer instance (`queue` events).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumers: Option<std::collections::BTreeMap<&'a str, u64>>,
    /// Consecutive failed health checks (`health-failed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// How the run's processes are contained (`run-started`): `pid-namespace` or `marker`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containment: Option<&'a str>,
    /// The engine's own peak RSS in KiB (`run-finished`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub engine_peak_rss_kib: Option<u64>,
    /// `queued` or `running` (`placed`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<&'a str>,
    /// The Slurm job (`placed`): the unit's own in batch mode, the allocation in step mode.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<&'a str>,
    /// The Slurm step, `JOB.STEP` (`placed`, step mode, once Slurm lists it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step_id: Option<&'a str>,
    /// The node it runs on (`placed`, once running).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<&'a str>,
}

/// How long the end of a run waits for an `--events` reader that reads nothing.
const EVENTS_READER_GRACE: Duration = Duration::from_secs(5);

/// The `--events` writer.
pub struct Events {
    out: EventsOut,
    /// The first write error, not yet reported.
    error: Option<String>,
    failed: bool,
}

enum EventsOut {
    /// A regular file, written at once: `tail -f` sees each event as it
    /// happens, and an engine killed with SIGKILL loses none.
    File {
        path: String,
        file: std::io::BufWriter<std::fs::File>,
    },
    /// `-`: through the console's stdout writer, so a slow reader never blocks the engine.
    Stdout(WriterHandle),
    /// A FIFO, a terminal or another device: its reader may stall, so it is
    /// written by a thread of its own and the engine never waits on it.
    Background(Writer),
}

impl Events {
    /// A file path (truncated), or `-` for stdout (given its writer).
    /// `wake` wakes the engine when a stalled reader caught up.
    pub fn open(
        target: &str,
        stdout: WriterHandle,
        wake: Option<std::sync::Arc<Wake>>,
    ) -> std::io::Result<Events> {
        use std::os::unix::fs::FileTypeExt;
        let kind = std::fs::metadata(target).map(|m| m.file_type()).ok();
        let out = if target == "-" {
            EventsOut::Stdout(stdout)
        } else if kind.is_some_and(|k| k.is_fifo()) {
            // Opened by the writer thread: a FIFO's reader may come later.
            EventsOut::Background(Writer::start(Target::Fifo(target.into()), None, wake))
        } else if kind.is_some_and(|k| k.is_char_device() || k.is_socket()) {
            let file = std::fs::OpenOptions::new().write(true).open(target)?;
            let target = Target::File(std::sync::Arc::new(file), target.into());
            EventsOut::Background(Writer::start(target, None, wake))
        } else {
            EventsOut::File {
                path: target.to_string(),
                file: std::io::BufWriter::new(std::fs::File::create(target)?),
            }
        };
        Ok(Events {
            out,
            error: None,
            failed: false,
        })
    }

    /// Writes one event, stamping its time.
    pub fn emit(&mut self, mut e: Event<'_>) {
        if self.failed {
            return;
        }
        e.ts = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
        let Ok(mut line) = serde_json::to_vec(&e) else {
            return;
        };
        line.push(b'\n');
        match &mut self.out {
            EventsOut::Stdout(w) => w.send(line),
            EventsOut::Background(w) => w.send(line),
            EventsOut::File { path, file } => {
                // One write and a flush per event: `tail -f` sees it now, and a crash loses none.
                if let Err(err) = file.write_all(&line).and_then(|_| file.flush()) {
                    self.error = Some(format!("cannot write events to {path}: {err}"));
                    self.failed = true;
                }
            }
        }
    }

    /// Flushes buffered events.
    pub fn flush(&mut self) {
        if let EventsOut::File { path, file } = &mut self.out {
            if !self.failed {
                if let Err(err) = file.flush() {
                    self.error = Some(format!("cannot write events to {path}: {err}"));
                    self.failed = true;
                }
            }
        }
    }

    /// The first write error, once.
    pub fn take_error(&mut self) -> Option<String> {
        if let EventsOut::Background(w) = &self.out {
            if let Some(e) = w.take_error() {
                let e = e.replacen("cannot write to", "cannot write events to", 1);
                self.error.get_or_insert(e);
            }
        }
        self.error.take()
    }

    /// Whether a background writer's backlog is over its high-water mark.
    pub fn backlogged(&self) -> bool {
        matches!(&self.out, EventsOut::Background(w) if w.backlogged())
    }

    /// Writes what is queued; a reader that never reads is given up at
    /// `deadline` or when `abandon` says so.
    pub fn close(&mut self, deadline: Option<Instant>, abandon: &mut dyn FnMut() -> bool) {
        self.flush();
        if let EventsOut::Background(w) = &mut self.out {
            // A reader that reads gets every event; one that stopped (or
            // never came) gets a few seconds, never the power to keep the run alive.
            if !w.close_unless_stalled(EVENTS_READER_GRACE, deadline, abandon) {
                self.error
                    .get_or_insert("--events: its reader did not read the last events".into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One event of each kind, in the order of `EVENT_NAMES`.
    fn one_of_each() -> Vec<RunEvent<'static>> {
        let d = Duration::from_millis(5);
        vec![
            RunEvent::RunStarted {
                containment: "none",
                pid: 1,
            },
            RunEvent::Started {
                process: "a",
                pid: 2,
                attempt: 1,
            },
            RunEvent::FailedToStart {
                process: "a",
                attempt: 1,
                reason: "r",
            },
            RunEvent::Ready {
                process: "a",
                pid: 2,
            },
            RunEvent::Exited {
                process: "a",
                pid: Some(2),
                code: Some(0),
                signal: None,
                duration: Some(d),
                attempt: 1,
                status: "ok",
                then: Some("retry"),
            },
            RunEvent::Retrying {
                process: "a",
                attempt: 2,
            },
            RunEvent::Restarting {
                process: "a",
                attempt: 2,
                delay: d,
            },
            RunEvent::Skipped {
                process: "a",
                reason: "r",
            },
            RunEvent::Cached { process: "a" },
            RunEvent::Stopped {
                process: "a",
                reason: "r",
            },
            RunEvent::Joined {
                process: "a",
                status: "ok",
                reason: None,
            },
            RunEvent::Stopping {
                process: "a",
                pid: 2,
                signal: "SIGTERM",
            },
            RunEvent::Killed {
                process: "a",
                pid: 2,
            },
            RunEvent::HealthFailed {
                process: "a",
                pid: 2,
                failures: 3,
            },
            RunEvent::Placed {
                process: "a",
                pid: 2,
                state: "running",
                job_id: "7",
                step_id: Some("7.1"),
                node: Some("n1"),
            },
            RunEvent::Queue {
                queue: "q",
                messages_in: 1,
                messages_out: 1,
                lost: 0,
                requeued: 0,
                per_consumer: &[],
            },
            RunEvent::RunFinished {
                code: 0,
                duration: d,
                engine_peak_rss_kib: 1,
            },
        ]
    }

    #[test]
    fn every_event_has_its_documented_name() {
        use crate::runtime::report::EVENT_NAMES;
        let all = one_of_each();
        let names: Vec<&str> = all.iter().map(|e| ndjson(e).event).collect();
        assert_eq!(names, EVENT_NAMES);
        // The docs' table lists every one of them.
        let docs = include_str!("../../docs/commands.md");
        for n in EVENT_NAMES {
            assert!(
                docs.contains(&format!("| `{n}` |")),
                "docs/commands.md lacks `{n}`"
            );
        }
    }
}
