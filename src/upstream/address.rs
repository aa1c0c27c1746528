//! Addresses requests may connect to. A host name on the `egress` allow-list is not
//! enough: every address it resolves to is checked each time a connection is made (so
//! a DNS answer that changes between the check and the connection cannot swap in an
//! internal address), and loopback, private, link-local, unique-local, shared (CGNAT),
//! cloud metadata and other special-purpose addresses are refused unless an `egress`
//! entry lists the address or a CIDR holding it.
//!
//! Owns the list of special-purpose ranges, the address entries of `egress` and the DNS
//! resolver every upstream client connects through. It never decides which host names
//! are allowed (that is `egress.rs`'s list) and never follows a proxy's resolution: a
//! request sent through an HTTP proxy is resolved by the proxy.

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;

use ipnet::IpNet;

/// A connection to an address mcpd refuses unless it is listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "egress: '{host}' resolves to {addr}, {kind}; mcpd connects to such addresses only when policies.yaml lists them: add '{addr}' (or a CIDR holding it) to 'egress' in policies.yaml"
)]
pub struct AddressRefused {
    /// The host name that was resolved.
    pub host: String,
    /// The address it resolved to.
    pub addr: IpAddr,
    /// What kind of address it is (`a loopback address`).
    pub kind: &'static str,
}

/// The addresses listed in `egress` (single addresses and CIDRs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed(Vec<IpNet>);

impl Allowed {
    /// The listed ranges.
    pub fn new(nets: Vec<IpNet>) -> Self {
        Self(nets)
    }

    /// Whether an `egress` entry lists `ip` (an IPv4-mapped IPv6 address counts as its
    /// IPv4 address).
    pub fn lists(&self, ip: IpAddr) -> bool {
        let v4 = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        self.0
            .iter()
            .any(|net| net.contains(&ip) || v4.is_some_and(|v4| net.contains(&v4)))
    }

    /// Whether a connection to `ip`, resolved from `host`, may be made.
    ///
    /// # Errors
    /// A special-purpose address no entry lists: names it and the entry to add.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), AddressRefused> {
        match special(ip) {
            Some(kind) if !self.lists(ip) => Err(AddressRefused {
                host: host.to_owned(),
                addr: ip,
                kind,
            }),
            _ => Ok(()),
        }
    }

    /// The addresses of `host` a connection may use, in the resolver's order.
    ///
    /// # Errors
    /// When none may be used: names the first refused one (IPv4 first).
    pub fn filter(
        &self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, AddressRefused> {
        let mut refused: Option<AddressRefused> = None;
        let mut ok = Vec::new();
        for addr in addrs {
            match self.check(host, addr.ip()) {
                Ok(()) => ok.push(addr),
                Err(e) => {
                    let better = refused
                        .as_ref()
                        .is_none_or(|r| r.addr.is_ipv6() && e.addr.is_ipv4());
                    if better {
                        refused = Some(e);
                    }
                }
            }
        }
        match refused {
            Some(e) if ok.is_empty() => Err(e),
            _ => Ok(ok),
        }
    }
}

/// What kind of special-purpose address `ip` is, or `None` for a global one.
pub fn special(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

/// Cloud metadata services: AWS, GCP, Azure, OpenStack (169.254.169.254), AWS ECS
/// task metadata (169.254.170.2), Alibaba Cloud (100.100.100.200), Oracle Cloud
/// (192.0.0.192).
const METADATA_V4: [[u8; 4]; 4] = [
    [169, 254, 169, 254],
    [169, 254, 170, 2],
    [100, 100, 100, 200],
    [192, 0, 0, 192],
];

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    if METADATA_V4.iter().any(|m| ip.octets() == *m) {
        return Some("a cloud metadata address");
    }
    let ranges: [([u8; 4], u32, &'static str); 16] = [
        ([0, 0, 0, 0], 8, "an unspecified ('this network') address"),
        ([10, 0, 0, 0], 8, "a private address"),
        ([100, 64, 0, 0], 10, "a shared (carrier-grade NAT) address"),
        ([127, 0, 0, 0], 8, "a loopback address"),
        ([169, 254, 0, 0], 16, "a link-local address"),
        ([172, 16, 0, 0], 12, "a private address"),
        ([192, 0, 0, 0], 24, "an IETF protocol address"),
        ([192, 0, 2, 0], 24, "a documentation address"),
        ([192, 88, 99, 0], 24, "a reserved (6to4 relay) address"),
        ([192, 168, 0, 0], 16, "a private address"),
        ([198, 18, 0, 0], 15, "a benchmarking address"),
        ([198, 51, 100, 0], 24, "a documentation address"),
        ([203, 0, 113, 0], 24, "a documentation address"),
        ([224, 0, 0, 0], 4, "a multicast address"),
        ([240, 0, 0, 0], 4, "a reserved address"),
        ([255, 255, 255, 255], 32, "a broadcast address"),
    ];
    ranges
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map(|(_, _, kind)| *kind)
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    // Addresses that carry an IPv4 address are what that address is: mapped
    // (::ffff:a.b.c.d), compatible (::a.b.c.d), NAT64 (64:ff9b::a.b.c.d), 6to4 (2002:AB:CD::).
    let [a, b, c, d, e, f, g, h] = s;
    let embedded = |hi: u16, lo: u16| {
        let [h1, h2] = hi.to_be_bytes();
        let [l1, l2] = lo.to_be_bytes();
        Ipv4Addr::new(h1, h2, l1, l2)
    };
    if ip.is_unspecified() {
        return Some("an unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if [a, b, c, d, e, f] == [0, 0, 0, 0, 0, 0xffff] {
        return special_v4(embedded(g, h));
    }
    if [a, b, c, d, e, f] == [0; 6] {
        return special_v4(embedded(g, h)).or(Some("a reserved (IPv4-compatible) address"));
    }
    if [a, b, c, d, e, f] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return special_v4(embedded(g, h));
    }
    if a == 0x2002 {
        return special_v4(embedded(b, c));
    }
    if ip == Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254) {
        return Some("a cloud metadata address");
    }
    match a {
        _ if a & 0xfe00 == 0xfc00 => Some("a unique-local (private) address"),
        _ if a & 0xffc0 == 0xfe80 => Some("a link-local address"),
        _ if a & 0xffc0 == 0xfec0 => Some("a site-local (private) address"),
        _ if a & 0xff00 == 0xff00 => Some("a multicast address"),
        0x2001 if b == 0xdb8 => Some("a documentation address"),
        0x2001 if b < 0x200 => Some("an IETF protocol address"),
        0x100 if [b, c, d] == [0, 0, 0] => Some("a discard-only address"),
        _ => None,
    }
}

/// How names are looked up: the system's resolver (getaddrinfo), or in tests a script.
type Lookup = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + Send>>
        + Send
        + Sync,
>;

/// The DNS resolver of every upstream client: the system's lookup, then
/// [`Allowed::filter`]. reqwest asks it for every new connection; a URL whose host is an
/// address is not resolved and is checked by `Egress::check` instead.
#[derive(Clone)]
pub(crate) struct Resolver {
    allowed: Arc<Allowed>,
    lookup: Lookup,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("allowed", &self.allowed)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// Resolves with the system's resolver, then keeps what `allowed` permits.
    pub(crate) fn system(allowed: Arc<Allowed>) -> Self {
        Self {
            allowed,
            lookup: Arc::new(|host| {
                Box::pin(async move {
                    let addrs = tokio::net::lookup_host((host.as_str(), 0)).await?;
                    Ok(addrs.collect())
                })
            }),
        }
    }
}

impl reqwest::dns::Resolve for Resolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allowed = Arc::clone(&self.allowed);
        let host = name.as_str().to_owned();
        let lookup = (self.lookup)(host.clone());
        Box::pin(async move {
            let ok = allowed.filter(&host, lookup.await?)?;
            let addrs: reqwest::dns::Addrs = Box::new(ok.into_iter());
            Ok(addrs)
        })
    }
}

/// The refusal somewhere in `e`'s chain of sources, if a connection was refused.
pub(crate) fn refusal<'e>(e: &'e (dyn std::error::Error + 'static)) -> Option<&'e AddressRefused> {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if let Some(r) = err.downcast_ref::<AddressRefused>() {
            return Some(r);
        }
        cur = err.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sock(s: &str) -> SocketAddr {
        SocketAddr::new(ip(s), 0)
    }

    #[test]
    fn special_purpose_addresses_are_named() {
        for (addr, kind) in [
            ("127.0.0.1", "a loopback address"),
            ("10.1.2.3", "a private address"),
            ("172.31.255.255", "a private address"),
            ("192.168.1.1", "a private address"),
            ("169.254.169.254", "a cloud metadata address"),
            ("169.254.1.1", "a link-local address"),
            ("100.100.100.200", "a cloud metadata address"),
            ("100.64.0.1", "a shared (carrier-grade NAT) address"),
            ("0.0.0.0", "an unspecified ('this network') address"),
            ("::1", "a loopback address"),
            ("::ffff:127.0.0.1", "a loopback address"),
            ("::ffff:10.0.0.1", "a private address"),
            ("64:ff9b::a9fe:a9fe", "a cloud metadata address"),
            ("2002:7f00:1::", "a loopback address"),
            ("fd00:ec2::254", "a cloud metadata address"),
            ("fd12::1", "a unique-local (private) address"),
            ("fe80::1", "a link-local address"),
            ("ff02::1", "a multicast address"),
        ] {
            assert_eq!(special(ip(addr)), Some(kind), "{addr}");
        }
        for public in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(special(ip(public)), None, "{public}");
        }
    }

    #[test]
    fn a_listed_address_or_cidr_is_allowed_and_mapped_addresses_count_as_ipv4() {
        let allowed = Allowed::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.0.0.0/8".parse().unwrap(),
        ]);
        assert!(allowed.check("h", ip("127.0.0.1")).is_ok());
        assert!(allowed.check("h", ip("::ffff:127.0.0.1")).is_ok());
        assert!(allowed.check("h", ip("10.9.8.7")).is_ok());
        assert!(allowed.check("h", ip("8.8.8.8")).is_ok());
        let e = allowed.check("h", ip("127.0.0.2")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "egress: 'h' resolves to 127.0.0.2, a loopback address; mcpd connects to such addresses only when policies.yaml lists them: add '127.0.0.2' (or a CIDR holding it) to 'egress' in policies.yaml"
        );
    }

    #[test]
    fn refused_addresses_are_dropped_and_the_rest_kept() {
        let allowed = Allowed::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let got = allowed
            .filter("localhost", [sock("::1"), sock("127.0.0.1")])
            .unwrap();
        assert_eq!(got, vec![sock("127.0.0.1")]);
        let e = Allowed::default()
            .filter("localhost", [sock("::1"), sock("127.0.0.1")])
            .unwrap_err();
        assert_eq!(e.addr, ip("127.0.0.1"), "IPv4 is named first");
    }

    /// DNS rebinding, with a real client and server: the name answers with an allowed
    /// address, then with another loopback address. reqwest asks the resolver again for
    /// the second connection, and the resolver refuses it before connecting.
    #[tokio::test]
    async fn an_answer_that_changes_to_an_internal_address_is_refused_on_the_next_connection() {
        let (api, _state) = crate::demo_api::spawn("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let answers = Arc::new(std::sync::Mutex::new(vec![
            vec![SocketAddr::new(ip("127.0.0.2"), api.port())],
            vec![SocketAddr::new(ip("127.0.0.1"), api.port())],
        ]));
        let script = Arc::clone(&answers);
        let resolver = Resolver {
            allowed: Arc::new(Allowed::new(vec!["127.0.0.1/32".parse().unwrap()])),
            lookup: Arc::new(move |_host| {
                let next = script.lock().unwrap().pop().unwrap_or_default();
                Box::pin(async move { Ok(next) })
            }),
        };
        let client = reqwest::Client::builder()
            .dns_resolver(resolver)
            .pool_max_idle_per_host(0)
            .build()
            .unwrap();
        let url = format!("http://rebind.test:{}/healthz", api.port());
        let first = client.get(&url).send().await.unwrap();
        assert_eq!(first.status(), 200);
        let second = client.get(&url).send().await.unwrap_err();
        let refused = refusal(&second).expect("refused by the resolver");
        assert_eq!(refused.addr, ip("127.0.0.2"));
        assert_eq!(refused.kind, "a loopback address");
        assert!(
            answers.lock().unwrap().is_empty(),
            "resolved once per connection"
        );
    }
}
