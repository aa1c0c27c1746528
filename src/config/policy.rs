//! `policies.yaml`: what every call must pass before it reaches an upstream.

use schemars::JsonSchema;
use serde::Deserialize;

use super::Located;

/// The policy file.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// What happens to a call no rule decides: `allow` or `deny`.
    pub default: DefaultEffect,
    /// Hosts requests may go to (`host` or `host:port`). Every other host is refused,
    /// checked on the final URL after templates are rendered. Empty means no egress.
    #[serde(default)]
    pub egress: Vec<Located<String>>,
}

/// The decision for calls no rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DefaultEffect {
    /// Calls are allowed unless a rule denies them.
    Allow,
    /// Calls are denied unless a rule allows them.
    Deny,
}

impl Default for PolicySpec {
    /// The secure default: nothing is allowed and nothing may leave.
    fn default() -> Self {
        Self {
            default: DefaultEffect::Deny,
            egress: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_policy_denies_and_allows_no_egress() {
        let p = PolicySpec::default();
        assert_eq!(p.default, DefaultEffect::Deny);
        assert!(p.egress.is_empty());
    }
}
