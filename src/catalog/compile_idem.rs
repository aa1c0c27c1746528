//! Compiling a tool's `idempotency:` section: the key template, its TTL, whose key it is,
//! whether the endpoint deduplicates, and the reconcile GET with its condition.
//!
//! Owns the checks of those fields (the reconcile request gets the same checks as the
//! tool's own request, named `idempotency.reconcile.*`). It never touches the network.

use std::collections::BTreeSet;

use super::compile::ToolCompiler;
use super::tool::{DEFAULT_IDEM_TTL, IdemPlan, Reconcile};
use crate::config::tool::{IdempotencyScope, IdempotencySpec, Method, RequestSpec};
use crate::idempotency::Scope;
use crate::response::jsonpath::JsonPath;
use crate::template::Slot;
use crate::upstream::Upstreams;
use crate::util::duration::parse as parse_duration;

impl ToolCompiler<'_> {
    /// The tool's idempotency plan; `None` (with diagnostics) when a part is wrong.
    pub(super) fn idempotency(
        &mut self,
        spec: &IdempotencySpec,
        request: &RequestSpec,
        args: &BTreeSet<String>,
        upstreams: &Upstreams,
        check_upstream: bool,
    ) -> Option<IdemPlan> {
        let key = self.template("idempotency.key", &spec.key, Slot::Text, args, &["args"]);
        let ttl = match &spec.ttl {
            None => Some(DEFAULT_IDEM_TTL),
            Some(t) => parse_duration(&t.value)
                .map_err(|e| self.err(t.pos, "idempotency.ttl", e))
                .ok(),
        };
        let reconcile = match &spec.reconcile {
            None => Some(None),
            Some(r) => {
                let get = RequestSpec {
                    upstream: request.upstream.clone(),
                    method: Method::Get,
                    path: r.path.clone(),
                    query: r.query.clone(),
                    headers: r.headers.clone().unwrap_or_else(|| request.headers.clone()),
                    body: None,
                    timeout: request.timeout.clone(),
                    retries: None,
                };
                let field = "idempotency.reconcile";
                let plan = self.request(field, &get, args, upstreams, check_upstream);
                let landed = JsonPath::compile(&r.landed.value)
                    .map_err(|e| {
                        let msg = format!("invalid JSONPath '{}': {e}", r.landed.value);
                        self.err(r.landed.pos, "idempotency.reconcile.landed", msg);
                    })
                    .ok();
                let equals = match &r.equals {
                    None => Some(None),
                    Some(t) => self
                        .template(
                            "idempotency.reconcile.equals",
                            t,
                            Slot::Value,
                            args,
                            &["args"],
                        )
                        .map(Some),
                };
                match (plan, landed, equals) {
                    (Some(request), Some(landed), Some(equals)) => Some(Some(Reconcile {
                        request,
                        landed,
                        equals,
                    })),
                    _ => None,
                }
            }
        };
        let dedupes = spec.upstream_dedupes.unwrap_or_else(|| {
            upstreams
                .get(&request.upstream.value)
                .is_some_and(|u| u.dedupes)
        });
        Some(IdemPlan {
            key: key?,
            ttl: ttl?,
            scope: match spec.scope {
                IdempotencyScope::Actor => Scope::Actor,
                IdempotencyScope::Tool => Scope::Tool,
            },
            dedupes,
            reconcile: reconcile?,
        })
    }
}
