//! The URLs of `http` probes, and the request itself (run in a thread of
//! its own by [`super::probes`]).

use std::time::Duration;

/// Whether a probe's host means this machine (where a unit placed on a node
/// is not).
pub(super) fn is_this_machine(host: &str) -> bool {
    matches!(
        host,
        "" | "localhost" | "0.0.0.0" | "::" | "::1" | "ip6-localhost"
    ) || host.starts_with("127.")
}

/// `url` with its host (`host`, as [`http_host_port`] found it) replaced.
pub(super) fn with_host(url: &str, host: &str, new: &str) -> String {
    let Some(rest) = url.strip_prefix("http://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (userinfo, authority) = match rest[..end].rsplit_once('@') {
        Some((u, a)) => (format!("{u}@"), a),
        None => (String::new(), &rest[..end]),
    };
    let bracketed = format!("[{host}]");
    let authority = if authority.starts_with(&bracketed) {
        authority.replacen(&bracketed, new, 1)
    } else {
        authority.replacen(host, new, 1)
    };
    format!("http://{userinfo}{authority}{}", &rest[end..])
}

/// The host and port of an `http://host[:port]/path` URL (port 80 by default).
pub(super) fn http_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .map_or(Some(80), |p| p.parse().ok())?;
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => Some((host.to_string(), port.parse().ok()?)),
        None => Some((authority.to_string(), 80)),
    }
}

/// A GET of `url` within `limit`: passes on an accepted status (any 2xx when
/// `accept` is empty).
pub(super) fn http_check(url: &str, accept: &[u16], limit: Duration) -> bool {
    // The connect gets the limit too: with only the overall one, a server
    // whose accept queue is full kept it for the kernel's SYN retries (31 s).
    let agent = ureq::AgentBuilder::new()
        .timeout_connect(limit)
        .timeout(limit)
        .redirects(0)
        .build();
    let status = match agent.get(url).call() {
        Ok(resp) => resp.status(),
        Err(ureq::Error::Status(code, _)) => code,
        Err(_) => return false,
    };
    if accept.is_empty() {
        (200..300).contains(&status)
    } else {
        accept.contains(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::{http_host_port, is_this_machine, with_host};

    #[test]
    fn urls_name_their_host_and_port() {
        assert_eq!(
            http_host_port("http://127.0.0.1:8080/health"),
            Some(("127.0.0.1".into(), 8080))
        );
        assert_eq!(
            http_host_port("http://localhost/x?y"),
            Some(("localhost".into(), 80))
        );
        assert_eq!(
            http_host_port("http://[::1]:9000/"),
            Some(("::1".into(), 9000))
        );
        assert_eq!(http_host_port("http://u:p@h:81"), Some(("h".into(), 81)));
        assert_eq!(http_host_port("ftp://h"), None);
    }

    #[test]
    fn a_probe_of_this_machine_goes_to_the_units_node() {
        for (url, host, placed) in [
            (
                "http://127.0.0.1:8080/health",
                "127.0.0.1",
                "http://n7:8080/health",
            ),
            ("http://localhost/x?y", "localhost", "http://n7/x?y"),
            ("http://[::1]:9000/", "::1", "http://n7:9000/"),
            (
                "http://localhost:localhost@localhost:81",
                "localhost",
                "http://localhost:localhost@n7:81",
            ),
        ] {
            assert!(is_this_machine(host));
            assert_eq!(with_host(url, host, "n7"), placed);
        }
        assert!(!is_this_machine("db.example.org"));
    }
}
