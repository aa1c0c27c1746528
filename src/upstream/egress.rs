//! Egress: the hosts requests may go to (`egress:` in policies.yaml), checked on the
//! final URL after templates are rendered.
//!
//! Owns the allow-list and its check. Anything not listed is refused; it never resolves
//! names or follows redirects.

use std::path::Path;

use reqwest::Url;

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
}

impl Egress {
    /// Compiles the allow-list of `path`; entries are `host` or `host:port`. A malformed
    /// entry is reported at its position.
    pub fn compile(
        path: &Path,
        entries: &[Located<String>],
        diags: &mut Diagnostics,
    ) -> Option<Self> {
        let before = diags.len();
        let mut allowed = Vec::new();
        for e in entries {
            let raw = e.value.trim().to_ascii_lowercase();
            let (host, port) = match raw.rsplit_once(':') {
                Some((h, p)) if !h.contains(':') || h.ends_with(']') => match p.parse::<u16>() {
                    Ok(port) => (h.to_owned(), Some(port)),
                    Err(_) => {
                        diags.push(Diagnostic::new(
                            path,
                            e.pos,
                            format!("egress entry '{}': port must be a number", e.value),
                        ));
                        continue;
                    }
                },
                _ => (raw.clone(), None),
            };
            if host.is_empty() || host.contains('/') {
                diags.push(Diagnostic::new(
                    path,
                    e.pos,
                    format!(
                        "egress entry '{}': write a host or host:port, not a URL",
                        e.value
                    ),
                ));
                continue;
            }
            allowed.push((host, port));
        }
        (diags.len() == before).then_some(Self { allowed })
    }

    /// Whether a request to `url` may leave.
    ///
    /// # Errors
    /// Names the refused host.
    pub fn check(&self, url: &Url) -> Result<(), EgressDenied> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let port = url.port_or_known_default();
        let ok = self
            .allowed
            .iter()
            .any(|(h, p)| *h == host && (p.is_none() || *p == port));
        if ok { Ok(()) } else { Err(EgressDenied(host)) }
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
    fn egress_entry_that_is_a_url_is_rejected() {
        let entries = vec![Located::unplaced("https://orders.internal/".to_owned())];
        assert!(
            Egress::compile(Path::new("p.yaml"), &entries, &mut Diagnostics::default()).is_none()
        );
    }
}
