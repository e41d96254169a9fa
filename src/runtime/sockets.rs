//! Whose is a listening socket? A `tcp` readiness probe must not pass on
//! another program's server: a connect succeeds to whoever listens on the
//! port. On Linux the kernel lists listening sockets in `/proc/net/tcp{,6}`
//! by inode, and each process's descriptors in `/proc/<pid>/fd` name the
//! socket inodes they hold.

use std::collections::HashSet;
use std::net::SocketAddr;

/// Whether a socket listening on `addr`'s port (on that address or a wildcard)
/// is held by a process of group `pgid`. `None` when the tables cannot be read
/// (then the probe falls back to the connect alone).
pub fn listener_in_group(addr: SocketAddr, pgid: i32) -> Option<bool> {
    let inodes = listening_inodes(addr)?;
    if inodes.is_empty() {
        return Some(false);
    }
    // The leader and its descendants first: a server is most often one of
    // them, and finding them reads a few `children` files, where a walk of
    // every process reads one `stat` per process on the machine.
    if descendants(pgid)
        .into_iter()
        .any(|pid| holds_any(pid, &inodes))
    {
        return Some(true);
    }
    // One that a double fork re-parented is still in the group.
    Some(
        group_members(pgid)
            .into_iter()
            .any(|pid| holds_any(pid, &inodes)),
    )
}

/// `root` and its descendants, from `/proc/PID/task/TID/children`.
fn descendants(root: i32) -> Vec<i32> {
    let mut out = vec![root];
    let mut at = 0;
    while at < out.len() {
        let pid = out[at];
        at += 1;
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let Ok(text) = std::fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            out.extend(
                text.split_whitespace()
                    .filter_map(|c| c.parse::<i32>().ok()),
            );
        }
        // A fork bomb in the group must not make this unbounded.
        if out.len() > 4096 {
            break;
        }
    }
    out
}

/// Inodes of the sockets in LISTEN state on `addr`'s port whose local address
/// is `addr`'s, or a wildcard of the same family.
fn listening_inodes(addr: SocketAddr) -> Option<HashSet<u64>> {
    let mut found = HashSet::new();
    let mut readable = false;
    for (table, v6) in [("/proc/net/tcp", false), ("/proc/net/tcp6", true)] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            if f.len() < 10 || f[3] != "0A" {
                continue;
            }
            let Some((ip_hex, port_hex)) = f[1].split_once(':') else {
                continue;
            };
            if u16::from_str_radix(port_hex, 16).ok() != Some(addr.port()) {
                continue;
            }
            if !address_matches(ip_hex, v6, addr) {
                continue;
            }
            if let Ok(inode) = f[9].parse::<u64>() {
                found.insert(inode);
            }
        }
    }
    readable.then_some(found)
}

/// The table's address (hex, in the kernel's byte order) is `addr`'s, or a
/// wildcard that covers it (an IPv6 wildcard also serves IPv4 unless v6only).
fn address_matches(ip_hex: &str, v6: bool, addr: SocketAddr) -> bool {
    let all_zero = ip_hex.bytes().all(|b| b == b'0');
    if all_zero {
        return true;
    }
    match (addr, v6) {
        (SocketAddr::V4(a), false) => {
            let Ok(n) = u32::from_str_radix(ip_hex, 16) else {
                return false;
            };
            // /proc prints the 32-bit word as stored, i.e. network order read as host (little-endian).
            std::net::Ipv4Addr::from(n.swap_bytes()) == *a.ip()
                || std::net::Ipv4Addr::from(n) == *a.ip()
        }
        (SocketAddr::V6(a), true) => {
            let mut bytes = [0u8; 16];
            for (w, chunk) in ip_hex.as_bytes().chunks(8).enumerate().take(4) {
                let Ok(word) = u32::from_str_radix(std::str::from_utf8(chunk).unwrap_or(""), 16)
                else {
                    return false;
                };
                bytes[w * 4..w * 4 + 4].copy_from_slice(&word.swap_bytes().to_be_bytes());
            }
            std::net::Ipv6Addr::from(bytes) == *a.ip()
        }
        (SocketAddr::V4(a), true) => {
            // An IPv4-mapped IPv6 listener, ::ffff:a.b.c.d.
            ip_hex.len() == 32
                && ip_hex[..16].bytes().all(|b| b == b'0')
                && ip_hex[16..24].eq_ignore_ascii_case("FFFF0000")
                && u32::from_str_radix(&ip_hex[24..32], 16)
                    .is_ok_and(|n| std::net::Ipv4Addr::from(n.swap_bytes()) == *a.ip())
        }
        (SocketAddr::V6(_), false) => false,
    }
}

/// Processes whose process group is `pgid`.
fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp ...: comm may hold spaces, so split after its ')'.
        let pgrp = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(2))
            .and_then(|s| s.parse::<i32>().ok());
        if pgrp == Some(pgid) {
            out.push(pid);
        }
    }
    out
}

fn holds_any(pid: i32, inodes: &HashSet<u64>) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| inodes.contains(&n))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listener_of_our_own_group_is_found_and_a_port_nobody_holds_is_not() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let me = nix::unistd::getpgrp().as_raw();
        assert_eq!(listener_in_group(addr, me), Some(true));
        // No process is in group 0x7fff_fff0.
        assert_eq!(listener_in_group(addr, 0x7fff_fff0), Some(false));
        drop(l);
        assert_eq!(listener_in_group(addr, me), Some(false));
    }

    #[test]
    fn a_wildcard_listener_serves_loopback() {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let me = nix::unistd::getpgrp().as_raw();
        assert_eq!(listener_in_group(addr, me), Some(true));
    }
}
