//! Egress: the hosts requests may go to (`egress:` in policies.yaml), checked on the
//! final URL after templates are rendered.
//!
//! Owns the allow-list and its check. An entry is a host name (`orders.internal`), an
//! address (`127.0.0.1`, `[::1]`), either with a port, or a CIDR (`10.0.0.0/8`).
//! Anything not listed is refused. Addresses and CIDRs also allow connections to those
//! addresses once a name resolves to them (`address.rs`, checked on every connection);
//! it never resolves names itself or follows redirects.

use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;

use ipnet::IpNet;
use reqwest::Url;

use super::address::Allowed;
use crate::config::Located;
use crate::config::diag::{Diagnostic, Diagnostics};

/// A host outside the allow-list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("egress to host '{0}' is not allowed: add it to 'egress' in policies.yaml")]
pub struct EgressDenied(pub String);

/// The hosts requests may go to, from `policies.yaml`.
#[derive(Debug, Clone, Default)]
pub struct Egress {
    allowed: Vec<(String, Option<u16>)>,
    /// CIDR entries: a URL whose host is an address inside one is allowed.
    ranges: Vec<IpNet>,
    /// Every address and CIDR entry, for the resolver of each upstream client.
    addresses: Arc<Allowed>,
}

/// One entry of `egress`, parsed.
enum Entry {
    Host(String, Option<u16>),
    Address(String, IpAddr, Option<u16>),
    Range(IpNet),
}

fn parse(raw: &str) -> Result<Entry, String> {
    let raw = raw.trim().to_ascii_lowercase();
    if raw.contains('/') {
        if raw.contains("://") {
            return Err("write a host or host:port, not a URL".to_owned());
        }
        return raw
            .parse::<IpNet>()
            .map(|net| Entry::Range(net.trunc()))
            .map_err(|_| "not an address range (write e.g. 10.0.0.0/8 or fd00::/8)".to_owned());
    }
    let (host, port) = match raw.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
            Ok(port) => (h.to_owned(), Some(port)),
            Err(_) => return Err("port must be a number".to_owned()),
        },
        _ => (raw.clone(), None),
    };
    if host.is_empty() {
        return Err("write a host or host:port, not a URL".to_owned());
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        // As the URL shows it: IPv6 in brackets.
        Ok(ip @ IpAddr::V6(_)) => Ok(Entry::Address(format!("[{bare}]"), ip, port)),
        Ok(ip) => Ok(Entry::Address(host, ip, port)),
        Err(_) => Ok(Entry::Host(host, port)),
    }
}

impl Egress {
    /// Compiles the allow-list of `path`. A malformed entry is reported at its position.
    pub fn compile(
        path: &Path,
        entries: &[Located<String>],
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let before = diags.len();
        let (mut allowed, mut ranges, mut nets) = (Vec::new(), Vec::new(), Vec::new());
        for e in entries {
            match parse(&e.value) {
                Ok(Entry::Host(host, port)) => allowed.push((host, port)),
                Ok(Entry::Address(host, ip, port)) => {
                    allowed.push((host, port));
                    nets.push(IpNet::from(ip));
                }
                Ok(Entry::Range(net)) => {
                    ranges.push(net);
                    nets.push(net);
                }
                Err(why) => diags.push(Diagnostic::new(
                    path,
                    e.pos,
                    format!("egress entry '{}': {why}", e.value),
                )),
            }
        }
        (diags.len() == before).then(|| Self {
            allowed,
            ranges,
            addresses: Arc::new(Allowed::new(nets)),
        })
    }

    /// The address and CIDR entries, which upstream clients' resolvers check.
    pub fn addresses(&self) -> &Arc<Allowed> {
        &self.addresses
    }

    /// Whether a request to `url` may leave.
    ///
    /// # Errors
    /// Names the refused host.
    pub fn check(&self, url: &Url) -> Result<(), EgressDenied> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = url.port_or_known_default();
        let listed = self
            .allowed
            .iter()
            .any(|(h, p)| *h == host && (p.is_none() || *p == port));
        // The URL parser writes an address host in its normal form (IPv6 in brackets).
        let ip = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
            .ok();
        let in_range = ip.is_some_and(|ip| self.ranges.iter().any(|n| n.contains(&ip)));
        if listed || in_range {
            Ok(())
        } else {
            Err(EgressDenied(host))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Located;

    #[test]
    fn egress_allows_listed_hosts_only() {
        let entries = vec![
            Located::unplaced("orders.internal".to_owned()),
            Located::unplaced("127.0.0.1:8080".to_owned()),
        ];
        let eg =
            Egress::compile(Path::new("p.yaml"), &entries, &mut Diagnostics::default()).unwrap();
        assert!(
            eg.check(&Url::parse("https://orders.internal/x").unwrap())
                .is_ok()
        );
        assert!(
            eg.check(&Url::parse("http://127.0.0.1:8080/x").unwrap())
                .is_ok()
        );
        assert!(
            eg.check(&Url::parse("http://127.0.0.1:9090/x").unwrap())
                .is_err()
        );
        let err = eg
            .check(&Url::parse("https://evil.example/x").unwrap())
            .unwrap_err()
            .to_string();
        assert!(err.contains("'evil.example'"), "{err}");
    }

    #[test]
    fn a_cidr_entry_allows_addresses_inside_it() {
        let entries = vec![
            Located::unplaced("10.0.0.0/8".to_owned()),
            Located::unplaced("fd00::/8".to_owned()),
        ];
        let eg =
            Egress::compile(Path::new("p.yaml"), &entries, &mut Diagnostics::default()).unwrap();
        assert!(
            eg.check(&Url::parse("http://10.1.2.3:8080/x").unwrap())
                .is_ok()
        );
        assert!(eg.check(&Url::parse("http://[fd00::5]/x").unwrap()).is_ok());
        assert!(eg.check(&Url::parse("http://11.1.2.3/x").unwrap()).is_err());
        assert!(eg.addresses().lists("10.9.9.9".parse().unwrap()));
    }

    #[test]
    fn egress_entry_that_is_a_url_is_rejected() {
        let entries = vec![Located::unplaced("https://orders.internal/".to_owned())];
        assert!(
            Egress::compile(Path::new("p.yaml"), &entries, &mut Diagnostics::default()).is_none()
        );
    }
}
