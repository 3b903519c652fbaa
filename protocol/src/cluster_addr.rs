//! Cluster addresses as members advertise them (`host:port`): whether two of them may name the
//! same listening socket, so a join cannot claim an address a member already uses.
//!
//! No name is resolved here (the core does no I/O), so the comparison is on the text, made
//! canonical: the host is compared without case, brackets or a trailing dot, IP addresses in
//! their canonical form (an IPv4-mapped IPv6 address as its IPv4 address), and the port as a
//! number. The one name treated as an address is `localhost`: it clashes with `127.0.0.1` and
//! `::1`, the loopback addresses it names on practically every system, because a member at
//! `127.0.0.1:9400` and a joiner at `localhost:9400` on one host fight over one socket. Other
//! names are compared as names: two different names that resolve to one address are not caught
//! here; the join's reach-back and the joiner's own bind catch most of those.

use std::net::IpAddr;

/// The name that stands for this host's loopback address.
const LOOPBACK_NAME: &str = "localhost";

/// A host as compared: an IP address, or a lowercase name.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Host {
    Ip(IpAddr),
    Name(String),
}

/// A cluster address split and made canonical; `None` when it is not `host:port`.
fn canonical(addr: &str) -> Option<(Host, u16)> {
    let (host, port) = addr.trim().rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let host = host.strip_prefix('[').unwrap_or(host);
    let host = host.strip_suffix(']').unwrap_or(host);
    let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let host = match host.parse::<IpAddr>() {
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => Host::Ip(IpAddr::V4(v4)),
            None => Host::Ip(IpAddr::V6(v6)),
        },
        Ok(ip) => Host::Ip(ip),
        Err(_) => Host::Name(host),
    };
    Some((host, port))
}

/// Whether `name` (a host already made canonical) is the loopback name and `other` one of the
/// loopback addresses it stands for.
fn loopback_alias(name: &Host, other: &Host) -> bool {
    matches!((name, other), (Host::Name(n), Host::Ip(ip)) if n == LOOPBACK_NAME
        && ip.is_loopback()
        && (*ip == IpAddr::from([127, 0, 0, 1]) || ip.is_ipv6()))
}

/// Whether cluster addresses `a` and `b` may name the same socket (see the module docs). Text
/// that is not `host:port` clashes only with the same text, ignoring case and outer spaces.
pub fn clash(a: &str, b: &str) -> bool {
    match (canonical(a), canonical(b)) {
        (Some((ha, pa)), Some((hb, pb))) => {
            pa == pb && (ha == hb || loopback_alias(&ha, &hb) || loopback_alias(&hb, &ha))
        }
        _ => a.trim().eq_ignore_ascii_case(b.trim()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_socket_written_differently_clashes() {
        for (a, b) in [
            ("127.0.0.1:9400", "127.0.0.1:9400"),
            ("127.0.0.1:9400", " 127.0.0.1:9400 "),
            ("localhost:9400", "127.0.0.1:9400"),
            ("LocalHost.:9400", "[::1]:9400"),
            ("[::ffff:10.0.0.5]:9400", "10.0.0.5:9400"),
            ("[2001:db8::1]:9400", "[2001:DB8:0:0::1]:9400"),
            ("Node-2.Example.com:9400", "node-2.example.com.:9400"),
            ("10.0.0.5:09400", "10.0.0.5:9400"),
            ("not an address", "NOT AN ADDRESS"),
        ] {
            assert!(clash(a, b), "{a} vs {b}");
            assert!(clash(b, a), "{b} vs {a}");
        }
    }

    #[test]
    fn different_sockets_do_not_clash() {
        for (a, b) in [
            ("127.0.0.1:9400", "127.0.0.1:9401"),
            ("127.0.0.1:9400", "127.0.0.2:9400"),
            ("127.0.0.1:9400", "[::1]:9400"),
            ("localhost:9400", "127.0.1.1:9400"),
            ("localhost:9400", "localhost:9401"),
            ("node-1.example.com:9400", "node-2.example.com:9400"),
            ("10.0.0.5:9400", "10.0.0.5"),
            (":9400", "127.0.0.1:9400"),
        ] {
            assert!(!clash(a, b), "{a} vs {b}");
            assert!(!clash(b, a), "{b} vs {a}");
        }
    }
}
