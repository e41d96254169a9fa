//! The reporter of `jobgraph run`: what a run shows while it runs (the
//! [`Console`]), the NDJSON event stream ([`Events`]), and, through
//! [`render_outcome`], the closing summary. The pieces live in
//! `console.rs`, `events.rs` and `summary.rs`; their public items are
//! re-exported here, where the rest of the crate has always found them.

pub use super::console::{colour_of, log_file_stem, Console, ConsoleStyle};
use super::events::ndjson;
pub use super::events::{Event, Events};
pub use super::summary::{render_outcome, render_summary, render_verdict};
pub use crate::runtime::report::{fmt_duration, SummaryRow};
use crate::runtime::report::{Progress, Reporter, RunEvent, RunStart, StartError};
use std::path::PathBuf;
use std::time::Instant;

/// The reporter of `jobgraph run`: the console (log lines, notes, progress
/// bar, log files) and the `--events` stream.
pub struct LiveReporter {
    style: ConsoleStyle,
    log_dir: Option<PathBuf>,
    events_target: Option<String>,
    console: Option<Console>,
    events: Option<Events>,
}

impl LiveReporter {
    /// Nothing is opened until the run starts.
    pub fn new(style: ConsoleStyle, log_dir: Option<PathBuf>, events: Option<String>) -> Self {
        LiveReporter {
            style,
            log_dir,
            events_target: events,
            console: None,
            events: None,
        }
    }
}

impl Reporter for LiveReporter {
    fn start(&mut self, start: RunStart<'_>) -> Result<(), StartError> {
        let mut style = self.style;
        if start.terminal_taken {
            style.progress = false;
        }
        let wake = std::sync::Arc::clone(&start.wake);
        let console = Console::new(
            style,
            start.names,
            self.log_dir.as_deref(),
            Some(start.wake),
        )?;
        if let Some(target) = &self.events_target {
            self.events = Some(
                Events::open(target, console.stdout_handle(), Some(wake)).map_err(|source| {
                    StartError::Events {
                        target: target.clone(),
                        source,
                    }
                })?,
            );
        }
        self.console = Some(console);
        Ok(())
    }

    fn event(&mut self, e: &RunEvent<'_>) {
        if let Some(ev) = &mut self.events {
            ev.emit(ndjson(e));
        }
        if let Some(c) = &mut self.console {
            match e {
                RunEvent::Started { process, .. } => c.settle_log_of(process, false),
                RunEvent::Cached { process } => c.settle_log_of(process, true),
                _ => {}
            }
        }
    }

    fn line(&mut self, inst: usize, name: &str, line: &[u8]) {
        if let Some(c) = &mut self.console {
            c.line(inst, name, line);
        }
    }

    fn instance_note(&mut self, name: &str, text: &str) {
        if let Some(c) = &mut self.console {
            c.instance_note(name, text);
        }
    }

    fn note(&mut self, text: &str, error: bool) {
        match &mut self.console {
            Some(c) => c.note(text, error),
            None => {
                super::writer::write_stderr(&format!("jobgraph: {text}\n"));
            }
        }
    }

    fn status(&mut self, text: &str) {
        if let Some(c) = &mut self.console {
            c.status(text);
        }
    }

    fn wants_progress(&self) -> bool {
        self.console.as_ref().is_some_and(Console::has_bar)
    }

    fn progress(&mut self, p: Progress<'_>) {
        if let Some(c) = &self.console {
            c.progress(p.done, p.running, p.failed, p.longest);
        }
    }

    fn flush(&mut self) {
        if let Some(c) = &mut self.console {
            c.flush();
        }
    }

    fn backlogged(&self) -> bool {
        self.console.as_ref().is_some_and(Console::backlogged)
            || self.events.as_ref().is_some_and(Events::backlogged)
    }

    fn take_errors(&mut self) -> Vec<String> {
        let mut errors = self
            .console
            .as_mut()
            .map(Console::take_errors)
            .unwrap_or_default();
        errors.extend(self.events.as_mut().and_then(Events::take_error));
        errors
    }

    fn lost(&self) -> crate::runtime::report::LostOutput {
        self.console
            .as_ref()
            .map(|c| c.lost().clone())
            .unwrap_or_default()
    }

    fn shutdown_began(&mut self) {
        if let Some(c) = &mut self.console {
            c.hide_bar();
        }
    }

    fn finish(
        &mut self,
        deadline: Option<Instant>,
        abandon: &mut dyn FnMut() -> bool,
    ) -> Vec<String> {
        let mut errors = Vec::new();
        if let Some(ev) = &mut self.events {
            ev.close(deadline, abandon);
            errors.extend(ev.take_error());
        }
        if let Some(c) = &mut self.console {
            errors.extend(c.finish(deadline, abandon));
        }
        errors
    }
}
