//! Signal names (`SIGTERM`, or `TERM`) to numbers, via nix's table for this OS.

use super::Signal;
use std::str::FromStr;

/// Parses a signal name; the error carries a suggestion when one is likely.
pub fn parse_signal(text: &str) -> Result<Signal, Option<String>> {
    let full = if text.starts_with("SIG") {
        text.to_string()
    } else {
        format!("SIG{text}")
    };
    // Other names of the same signals (kill -l knows them; nix does not).
    let full = match full.as_str() {
        "SIGIOT" => "SIGABRT".to_string(),
        "SIGPOLL" => "SIGIO".to_string(),
        "SIGCLD" => "SIGCHLD".to_string(),
        _ => full,
    };
    match nix::sys::signal::Signal::from_str(&full) {
        // These pause or resume rather than end a process: a stop would wait out the grace period.
        Ok(sig)
            if matches!(
                sig.as_str(),
                "SIGSTOP" | "SIGTSTP" | "SIGTTIN" | "SIGTTOU" | "SIGCONT"
            ) =>
        {
            Err(None)
        }
        Ok(sig) => Ok(Signal {
            number: sig as i32,
            name: sig.as_str(),
        }),
        Err(_) => {
            let upper = full.to_ascii_uppercase();
            if let Ok(sig) = nix::sys::signal::Signal::from_str(&upper) {
                return Err(Some(sig.as_str().to_string()));
            }
            let names = nix::sys::signal::Signal::iterator().map(|s| s.as_str());
            Err(super::did_you_mean(&upper, names).map(str::to_string))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_with_and_without_prefix() {
        assert_eq!(parse_signal("SIGTERM").unwrap().number, 15);
        assert_eq!(parse_signal("INT").unwrap().name, "SIGINT");
        assert_eq!(parse_signal("sigterm"), Err(Some("SIGTERM".into())));
        assert!(parse_signal("SIGFOO").is_err());
        assert_eq!(parse_signal("SIGIOT").unwrap().name, "SIGABRT");
        assert_eq!(parse_signal("POLL").unwrap().name, "SIGIO");
    }
}
