//! Why a run is being cancelled: one value, ordered by severity (as
//! nextest's `CancelReason`), instead of flags that must agree.

use super::signal_name;

/// A later, more severe reason replaces an earlier one; never the reverse.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Cancel {
    /// Nothing could make progress any more.
    Stalled,
    /// This process failed and fail_fast is on.
    FailFast(String),
    /// The event loop itself failed: everything is killed.
    LoopFailed,
    /// SIGINT, SIGTERM or SIGHUP: stop gracefully, exit 128 + the signal.
    Signal(i32),
    /// A second such signal: kill at once.
    Kill(i32),
}

impl Cancel {
    /// The reason in words, as skip and stop reasons quote it.
    pub(super) fn describe(&self) -> String {
        match self {
            Cancel::Stalled => "the run stalled".into(),
            Cancel::FailFast(name) => format!("`{name}` failed and fail_fast is on"),
            Cancel::LoopFailed => "the event loop failed".into(),
            Cancel::Signal(sig) | Cancel::Kill(sig) => {
                format!("interrupted by {}", signal_name(*sig))
            }
        }
    }

    /// The signal that interrupted the run, if one did.
    pub(super) fn signal(&self) -> Option<i32> {
        match self {
            Cancel::Signal(sig) | Cancel::Kill(sig) => Some(*sig),
            _ => None,
        }
    }

    /// Whether everything is killed at once, without grace.
    pub(super) fn kills(&self) -> bool {
        matches!(self, Cancel::LoopFailed | Cancel::Kill(_))
    }

    /// Severity alone: which signal or which process does not make a
    /// reason more severe (a SIGTERM after a SIGINT's kill changes nothing).
    pub(super) fn rank(&self) -> u8 {
        match self {
            Cancel::Stalled => 0,
            Cancel::FailFast(_) => 1,
            Cancel::LoopFailed => 2,
            Cancel::Signal(_) => 3,
            Cancel::Kill(_) => 4,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signal_outranks_a_failure_and_a_second_signal_outranks_both() {
        let fail = Cancel::FailFast("a".into());
        assert!(Cancel::Stalled < fail);
        assert!(fail < Cancel::Signal(libc::SIGINT));
        assert!(Cancel::Signal(libc::SIGTERM) < Cancel::Kill(libc::SIGINT));
        assert!(Cancel::Kill(2).kills() && !Cancel::Signal(2).kills());
        assert_eq!(Cancel::Kill(2).rank(), Cancel::Kill(15).rank());
    }
}
