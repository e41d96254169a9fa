//! A process's `ready` and `health` probes.
//!
//! This is a child module of `decode.rs`.

use super::*;

/// What a probe table holds (`ready` or `health`).
#[derive(Default)]
struct ProbeTable {
    probe: Option<Sp<Probe>>,
    interval: Option<Duration>,
    timeout: Option<Duration>,
    failures: Option<u32>,
}

/// The probe keys of a probe table, before they are put together.
struct Found {
    /// The probe and its value's span.
    probe: Option<(Probe, Span)>,
    /// `status`, and its key's span.
    status: Option<(Vec<u16>, Span)>,
    /// False when a key was invalid (already reported).
    ok: bool,
}

impl Decoder {
    pub(super) fn ready(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Ready> {
        let t = self.probe_table(what, v, KEYS_READY, "`ready`")?;
        Some(Ready {
            probe: t.probe?,
            interval: t.interval.unwrap_or(Duration::from_millis(200)),
            timeout: t.timeout.unwrap_or(Duration::from_secs(30)),
        })
    }

    pub(super) fn health(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Health> {
        let t = self.probe_table(what, v, KEYS_HEALTH, "`health`")?;
        Some(Health {
            probe: t.probe?,
            interval: t.interval.unwrap_or(Duration::from_secs(5)),
            failures: t.failures.unwrap_or(3),
        })
    }

    /// A table with exactly one probe (`tcp`, `cmd`, `log`, `file`, `http`)
    /// and its settings; `keys` are the keys this kind of table allows.
    fn probe_table(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
        keys: &[&str],
        context: &str,
    ) -> Option<ProbeTable> {
        let t = self.table(what, v)?;
        let mut out = ProbeTable::default();
        let mut probe: Option<(Probe, std::ops::Range<usize>)> = None;
        let mut status: Option<(Vec<u16>, std::ops::Range<usize>)> = None;
        let mut ok = true;
        for (k, pv) in t.iter() {
            let key = key_str(k);
            if !keys.contains(&key) {
                self.unknown_key(k, keys, context);
                continue;
            }
            let found = match key {
                "interval" => {
                    out.interval = self.duration(&format!("{what}.interval"), pv, false);
                    continue;
                }
                "timeout" => {
                    out.timeout = self.duration(&format!("{what}.timeout"), pv, false);
                    continue;
                }
                "failures" => {
                    out.failures = self
                        .int(
                            &format!("{what}.failures"),
                            pv,
                            Code::BadNumber,
                            1,
                            MAX_COUNT,
                        )
                        .map(|n| n as u32);
                    continue;
                }
                "status" => {
                    status = self
                        .statuses(&format!("{what}.status"), pv)
                        .map(|s| (s, self.at(k.span())));
                    continue;
                }
                _ => self.probe_kind(what, key, pv),
            };
            match (found, &probe) {
                (_, Some((_, first))) => {
                    ok = false;
                    self.push(
                        Diagnostic::at(Code::BadProbe, self.at(k.span()), format!("`{what}` has more than one probe"))
                            .label("second probe")
                            .related(first.clone(), "first probe")
                            .help("keep one of tcp, cmd, log, file or http; chain checks in a cmd probe if you need several"),
                    );
                }
                (Some(p), None) => probe = Some((p, self.at(pv.span()))),
                (None, None) => ok = false,
            }
        }
        let found = Found { probe, status, ok };
        self.finish_probe(what, v, keys, out, found)
    }

    /// The probe table once all its keys are read: `status` goes to the http
    /// probe, and a table without a valid probe is reported (unless its keys
    /// were already).
    fn finish_probe(
        &mut self,
        what: &dyn std::fmt::Display,
        v: &Value<'_>,
        keys: &[&str],
        mut out: ProbeTable,
        found: Found,
    ) -> Option<ProbeTable> {
        let Found {
            mut probe,
            status,
            mut ok,
        } = found;
        match (&mut probe, status) {
            (Some((Probe::Http { status, .. }, _)), Some((s, _))) => *status = s,
            (_, Some((_, span))) if ok => {
                ok = false;
                self.push(
                    Diagnostic::at(
                        Code::BadProbe,
                        span,
                        format!("`{what}.status` applies only to an http probe"),
                    )
                    .label("no http probe")
                    .help("drop status, or probe with http = \"http://127.0.0.1:8080/health\""),
                );
            }
            _ => {}
        }
        match probe {
            Some((p, span)) if ok => {
                out.probe = Some(Sp::new(p, span));
                Some(out)
            }
            Some(_) => None,
            None if ok => {
                self.push(
                    Diagnostic::at(Code::BadProbe, self.at(v.span()), format!("`{what}` has no probe"))
                        .label("no probe")
                        .help(if keys.contains(&"log") {
                            "add one of tcp = \"127.0.0.1:8080\", http = \"http://127.0.0.1:8080/health\", cmd = [...], log = \"regex\" or file = \"path\""
                        } else {
                            "add one of tcp = \"127.0.0.1:8080\", http = \"http://127.0.0.1:8080/health\", cmd = [...] or file = \"path\""
                        }),
                );
                None
            }
            None => None,
        }
    }

    /// One probe key's value: `None` when it is invalid (already reported).
    fn probe_kind(
        &mut self,
        what: &dyn std::fmt::Display,
        key: &str,
        pv: &Value<'_>,
    ) -> Option<Probe> {
        match key {
            "tcp" => self.tcp_probe(&format!("{what}.tcp"), pv),
            "http" => self.http_probe(&format!("{what}.http"), pv),
            "cmd" => self.strings(&format!("{what}.cmd"), pv, &|| None).and_then(|argv| {
                if argv.first().is_none_or(|a| a.value.is_empty()) {
                    self.push(Diagnostic::at(Code::BadProbe, self.at(pv.span()), "the probe command is empty").label("no program"));
                    None
                } else {
                    Some(Probe::Cmd(argv.into_iter().map(|a| a.value).collect()))
                }
            }),
            "log" => self.string(&format!("{what}.log"), pv).and_then(|re| match regex::Regex::new(&re.value) {
                Ok(_) => Some(Probe::Log(re.value)),
                Err(e) => {
                    let detail = e.to_string();
                    let last = detail.lines().last().unwrap_or("invalid regex").trim();
                    let last = last.strip_prefix("error: ").unwrap_or(last).to_string();
                    self.push(
                        Diagnostic::at(Code::BadProbe, self.at(pv.span()), format!("the log probe is not a valid regex: {last}"))
                            .label("invalid regex")
                            .help("the syntax is Rust's regex crate (like RE2); escape literal brackets with \\\\"),
                    );
                    None
                }
            }),
            _ => self.string(&format!("{what}.file"), pv).and_then(|f| {
                if f.value.is_empty() {
                    self.push(Diagnostic::at(Code::BadProbe, self.at(pv.span()), "the file probe's path is empty"));
                    None
                } else {
                    Some(Probe::File(f.value))
                }
            }),
        }
    }

    /// `http = "http://host:port/path"`: plain HTTP (a health endpoint on the
    /// process's own machine; no TLS).
    fn http_probe(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Probe> {
        let s = self.string(what, v)?;
        let valid = s.value.strip_prefix("http://").is_some_and(|rest| {
            !rest.is_empty()
                && !rest.starts_with('/')
                && !rest.contains(char::is_whitespace)
                && http_port_ok(rest)
                && http_host_ok(rest)
        });
        if valid {
            return Some(Probe::Http {
                url: s.value,
                status: Vec::new(),
            });
        }
        let help = if s.value.starts_with("https://") {
            "the probe speaks plain HTTP to the process itself: use http://, or a cmd probe with curl for TLS"
        } else {
            "write http = \"http://127.0.0.1:8080/health\""
        };
        self.push(
            Diagnostic::at(
                Code::BadProbe,
                s.span,
                format!("`{what}` is not an http:// URL"),
            )
            .label("expected http://host:port/path")
            .help(help),
        );
        None
    }

    /// `status = 200` or `status = [200, 204]`.
    fn statuses(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Vec<u16>> {
        let items: Vec<&Value<'_>> = match v.get_ref() {
            DeValue::Array(a) => a.iter().collect(),
            _ => vec![v],
        };
        let mut out = Vec::new();
        for item in items {
            out.push(self.int(what, item, Code::BadProbe, 100, 599)? as u16);
        }
        if out.is_empty() {
            self.push(
                Diagnostic::at(
                    Code::BadProbe,
                    self.at(v.span()),
                    format!("`{what}` is empty"),
                )
                .help(
                    "list the accepted statuses, e.g. status = [200, 204], or drop it for any 2xx",
                ),
            );
            return None;
        }
        Some(out)
    }

    fn tcp_probe(&mut self, what: &dyn std::fmt::Display, v: &Value<'_>) -> Option<Probe> {
        let s = self.string(what, v)?;
        let parsed = s.value.rsplit_once(':').and_then(|(host, port)| {
            let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
            // An IPv6 address needs brackets, or its last group reads as the port.
            if bracketed.is_none() && host.contains(':') {
                return None;
            }
            let port: u16 = port_number(port)?;
            host_ok(host).then(|| (bracketed.unwrap_or(host).to_string(), port))
        });
        match parsed {
            Some((host, port)) => Some(Probe::Tcp { host, port }),
            None => {
                self.push(
                    Diagnostic::at(Code::BadProbe, s.span, format!("`{what}` is not host:port"))
                        .label("expected host:port")
                        .help("write tcp = \"127.0.0.1:8080\" (a port from 1 to 65535; IPv6 as \"[::1]:8080\")"),
                );
                None
            }
        }
    }
}

/// A port written as digits only (no sign), from 1 to 65535.
fn port_number(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A probe's host: a name (letters, digits, `-`, `.`, `_`), an IPv4
/// address, or an IPv6 address in brackets. `{replica}` stands for a digit.
fn host_ok(host: &str) -> bool {
    if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return v6.parse::<std::net::Ipv6Addr>().is_ok();
    }
    let host = host.replace("{replica}", "1");
    !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// The host of an http URL's authority (after `http://`) is one [`host_ok`]
/// takes (no user info, no empty host).
fn http_host_ok(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return false;
    }
    let host = match authority.find(']') {
        Some(end) if authority.starts_with('[') => &authority[..=end],
        _ => authority.split(':').next().unwrap_or_default(),
    };
    host_ok(host)
}

/// The port of an http URL's authority (after `http://`), if it has one, is
/// a valid port; `{replica}` in it stands for a digit.
fn http_port_ok(rest: &str) -> bool {
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let port = match authority.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':'),
        None => authority.split_once(':').map(|(_, p)| p),
    };
    match port {
        None => true,
        Some(port) => port_number(&port.replace("{replica}", "1")).is_some(),
    }
}

#[cfg(test)]
mod port_tests {
    use super::*;

    #[test]
    fn ports_are_digits_from_1_to_65535() {
        assert_eq!(port_number("80"), Some(80));
        assert_eq!(port_number("0080"), Some(80));
        for bad in ["", "+80", "0", "65536", "80x", "-1"] {
            assert_eq!(port_number(bad), None, "{bad}");
        }
        for ok in ["h/x", "h:8080/x", "[::1]:80/", "h", "h:80{replica}/"] {
            assert!(http_port_ok(ok), "{ok}");
        }
        for bad in ["h:99999/", "h:0/", "h:80x/", "h:80:90/", "h:/", "[::1]:/"] {
            assert!(!http_port_ok(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn hosts_are_names_ipv4_or_bracketed_ipv6() {
        for ok in [
            "localhost",
            "127.0.0.1",
            "[::1]",
            "db-1.local",
            "w{replica}",
            "_svc",
        ] {
            assert!(host_ok(ok), "{ok}");
        }
        for bad in ["", "a]", "[a]", "a b", "[::1", "u@h", "h%x"] {
            assert!(!host_ok(bad), "{bad}");
        }
        for ok in ["h/x", "h:8080/x", "[::1]:80/", "127.0.0.1"] {
            assert!(http_host_ok(ok), "{ok}");
        }
        for bad in [":80/", "u:p@x/", "x y/", "[::1/"] {
            assert!(!http_host_ok(bad), "{bad}");
        }
    }
}
