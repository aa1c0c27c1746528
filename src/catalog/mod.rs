//! The catalog: every tool compiled once into an immutable snapshot.
//!
//! Owns the step from what the user wrote (`config`) to what the call path reads:
//! templates compiled, schemas turned into validators, JSONPaths parsed, upstreams
//! resolved, cross-file checks done. Every problem is collected as a diagnostic. The
//! call path only reads a `Catalog`; it never parses.

mod compile;
mod compile_idem;
mod prompt;
mod resource;
mod shared;
mod template_check;
mod tool;

pub use prompt::{Arg, Body, Complete, Message, Prompt};
pub use resource::{ResourceDecl, resolve};
pub use tool::{DEFAULT_IDEM_TTL, IdemPlan, Reconcile, Tool, wire_name};

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::Value;

use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::{Loaded, ToolFile, ToolSpec, Vars};
use crate::identity::elevation::Rules as ElevationRules;
use crate::identity::ticket::TicketCheck;
use crate::identity::{Actor, Identity, Source};
use crate::limits::{Breaker, Limits};
use crate::policy::Policy;
use crate::template::TemplateSet;
use crate::upstream::{Egress, Upstreams};
use compile::ToolCompiler;

/// The compiled snapshot of one config directory.
#[derive(Debug)]
pub struct Catalog {
    /// Tools in file order.
    pub tools: Vec<Arc<Tool>>,
    by_name: HashMap<String, usize>,
    /// Upstream clients.
    pub upstreams: Upstreams,
    /// Hosts requests may go to.
    pub egress: Egress,
    /// The decision for calls no rule decides.
    pub policy: Policy,
    /// The actor of calls without a token (`default_actor`); without one such calls are
    /// refused.
    pub default_actor: Option<Arc<Actor>>,
    /// What conditions see as `env`.
    pub env: Value,
    /// Budgets and stop rules.
    pub limits: Limits,
    /// Token verification and issuing, when `identity:` is configured.
    pub identity: Option<Arc<Identity>>,
    /// Rules for elevation grants.
    pub elevation: ElevationRules,
    /// What `tools/list` shows an actor.
    pub tools_list: crate::config::server::ToolsList,
    /// What each upstream is told of the caller (`upstreams.*.identity`).
    pub forwarding: crate::identity::forward::Forwarding,
    /// Prompts from `prompts.d`, in file order.
    pub prompts: Vec<Arc<Prompt>>,
    /// Circuit breakers of upstreams (`breaker:` in mcpd.yaml), by upstream name.
    pub breakers: HashMap<String, Breaker>,
}

impl Catalog {
    /// Compiles everything that was loaded.
    ///
    /// # Errors
    /// Every problem in every file.
    pub fn compile(loaded: &Loaded, vars: &Vars) -> Result<Self, Diagnostics> {
        Self::compile_with(loaded, vars, None)
    }

    /// Compiles, reusing the unchanged upstream clients of `previous` (hot reload).
    ///
    /// # Errors
    /// Every problem in every file.
    pub fn compile_with(
        loaded: &Loaded,
        vars: &Vars,
        previous: Option<&Catalog>,
    ) -> Result<Self, Diagnostics> {
        let mut diags = Diagnostics::default();
        let (server_path, server) = &loaded.server;
        let (policy_path, policy) = &loaded.policy;
        // Egress first: its address entries go into every upstream client's resolver.
        let egress = Egress::compile(policy_path, &policy.egress, &mut diags).unwrap_or_default();
        let upstreams = Upstreams::compile(
            server_path,
            server,
            egress.addresses(),
            previous.map(|c| &c.upstreams),
            &mut diags,
        )
        .unwrap_or_default();
        let compiled_policy = Policy::compile(policy_path, policy, &mut diags);
        let limits = Limits::compile(policy_path, policy, &mut diags).unwrap_or_default();
        let default_actor = server
            .default_actor
            .as_ref()
            .map(|a| Arc::new(Actor::declared(a, Source::DefaultActor)));
        let identity = server
            .identity
            .as_ref()
            .and_then(|spec| Identity::compile(server_path, spec, vars, &mut diags))
            .map(Arc::new);
        let mut elevation =
            ElevationRules::compile(server_path, &server.elevation, &mut diags).unwrap_or_default();
        elevation.ticket_check = (server.elevation.ticket_check.as_ref())
            .and_then(|spec| TicketCheck::compile(server_path, spec, vars, &mut diags))
            .map(Arc::new);
        let forwarding = crate::identity::forward::Forwarding::compile(
            server_path,
            server,
            identity.as_deref(),
            vars,
            &mut diags,
        );
        if let (Some(s), Err(e)) = (&server.reload.settle, server.reload.read_settle()) {
            diags.push(Diagnostic::new(
                server_path,
                s.pos,
                format!("reload.settle: {e}"),
            ));
        }
        let breakers = server
            .upstreams
            .iter()
            .filter_map(|(name, up)| {
                let spec = up.breaker.as_ref()?;
                Breaker::compile(server_path, spec, "upstream", name, &mut diags)
                    .map(|b| (name.clone(), b))
            })
            .collect();
        for up in upstreams.iter() {
            for url in std::iter::once(&up.base).chain(up.regions.values()) {
                if let Err(e) = egress.check(url) {
                    let pos = server
                        .upstreams
                        .get(&up.name)
                        .map(|u| u.url.pos)
                        .unwrap_or_default();
                    diags.push(Diagnostic::new(
                        server_path,
                        pos,
                        format!("upstream '{}': {e}", up.name),
                    ));
                }
            }
        }

        let mut tools = Vec::new();
        let mut seen: HashMap<String, (PathBuf, Pos, String)> = HashMap::new();
        let have_upstreams = diags.is_empty();
        // Each tool compiles on its own (split across the cores); the checks across
        // tools (names) follow in file order.
        let shared = shared::Shared::default();
        let specs: Vec<(&ToolFile, &ToolSpec)> = loaded
            .tools
            .iter()
            .flat_map(|f| f.tools.iter().map(move |s| (f, s)))
            .collect();
        let compiled = crate::util::par::map(&specs, |(file, spec)| {
            if let Some(tool) = reusable(previous, file, spec, &upstreams) {
                return (Some(tool), Diagnostics::default());
            }
            let mut c = ToolCompiler {
                file: &file.path,
                id: &spec.name.value,
                templates: TemplateSet::new(),
                diags: Diagnostics::default(),
                secrets: BTreeSet::new(),
                vars,
                request_reads: BTreeSet::new(),
                shared: &shared,
            };
            let tool = c.compile(spec, file.fingerprint, &upstreams, have_upstreams);
            (tool.map(Arc::new), c.diags)
        });
        for ((file, spec), (tool, tool_diags)) in specs.into_iter().zip(compiled) {
            diags.extend(tool_diags);
            let id = spec.name.value.clone();
            let wire = wire_name(&id);
            let keys = if wire == id {
                vec![id.clone()]
            } else {
                vec![id.clone(), wire]
            };
            for key in keys {
                if let Some((other, pos, other_id)) = seen.get(&key) {
                    diags.push(Diagnostic::new(
                            &file.path,
                            spec.name.pos,
                            format!(
                                "tool '{id}': name '{key}' is already used by tool '{other_id}' at {}:{}:{}",
                                other.display(),
                                pos.line,
                                pos.col
                            ),
                        ));
                    // One report per tool: its wire name collides for the same reason.
                    break;
                }
                seen.insert(key, (file.path.clone(), spec.name.pos, id.clone()));
            }
            let Some(tool) = tool else { continue };
            tools.push(tool);
        }
        if let Some(p) = compiled_policy.as_ref().filter(|_| have_upstreams) {
            let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
            diags.extend(p.check_upstreams(policy_path, &names));
        }
        check_resource_uris(&tools, loaded, &mut diags);
        check_ticket_tool(&elevation, &tools, server_path, &mut diags);
        let prompts = compile_prompts(loaded, &tools, &mut diags);
        let Some(compiled_policy) = compiled_policy.filter(|_| diags.is_empty()) else {
            diags.sort();
            return Err(diags);
        };
        let by_name = tools
            .iter()
            .enumerate()
            .flat_map(|(i, t)| [(t.id.clone(), i), (t.wire.clone(), i)])
            .collect();
        Ok(Self {
            tools,
            by_name,
            upstreams,
            egress,
            policy: compiled_policy,
            default_actor,
            env: serde_json::json!({ "name": vars.get("MCPD_ENV").unwrap_or_else(|| "default".to_owned()) }),
            limits,
            identity,
            elevation,
            tools_list: server.tools_list,
            forwarding,
            prompts,
            breakers,
        })
    }

    /// The prompt called `name`, by wire name or by id.
    pub fn prompt(&self, name: &str) -> Option<&Arc<Prompt>> {
        (self.prompts.iter()).find(|p| p.wire == name || p.id == name)
    }

    /// The tool called `name`, by wire name or by id.
    pub fn get(&self, name: &str) -> Option<&Arc<Tool>> {
        self.by_name.get(name).and_then(|i| self.tools.get(*i))
    }

    /// Who calls without a token: the default actor's subject, or `anonymous`.
    pub fn default_subject(&self) -> &str {
        self.default_actor
            .as_ref()
            .map_or("anonymous", |a| a.subject.as_str())
    }

    /// The `tools/list` entries.
    pub fn listing(&self) -> Vec<rmcp::model::Tool> {
        (self.tools.iter())
            .filter(|t| t.is_tool())
            .map(|t| t.listing.clone())
            .collect()
    }

    /// What `tools/list` shows `actor`: the tools its scopes let it call (every tool with
    /// `tools_list: all`, or when no actor could be established: each call then says
    /// why it is refused).
    pub fn listing_for(&self, actor: Option<&Actor>) -> Vec<rmcp::model::Tool> {
        (self.tools.iter())
            .filter(|t| t.is_tool() && self.shows(actor, t))
            .map(|t| t.listing.clone())
            .collect()
    }

    /// Whether a list shows `tool` to `actor`: with `tools_list: scoped` (the default),
    /// only when its scopes let it call the tool; always with `tools_list: all` or when
    /// no actor could be established.
    fn shows(&self, actor: Option<&Actor>, tool: &Tool) -> bool {
        match actor {
            Some(a) if self.tools_list == crate::config::server::ToolsList::Scoped => {
                a.may_call(&tool.id)
            }
            _ => true,
        }
    }

    /// The tools declared as resources, with their declarations, in file order.
    pub fn resources(&self) -> impl Iterator<Item = (&Arc<Tool>, &ResourceDecl)> {
        (self.tools.iter()).filter_map(|t| t.resource.as_ref().map(|r| (t, r)))
    }

    /// What `resources/list` and `resources/templates/list` show `actor`: the declared
    /// resources whose tool a list shows it (reading one is a call of that tool).
    pub fn resources_for<'a>(
        &'a self,
        actor: Option<&'a Actor>,
    ) -> impl Iterator<Item = (&'a Arc<Tool>, &'a ResourceDecl)> {
        self.resources().filter(move |(t, _)| self.shows(actor, t))
    }
}

/// Compiles every prompt; names must be unique (by id and wire name) and a completion
/// lookup must name a tool that exists.
fn compile_prompts(
    loaded: &Loaded,
    tools: &[Arc<Tool>],
    diags: &mut Diagnostics,
) -> Vec<Arc<Prompt>> {
    let mut out: Vec<Arc<Prompt>> = Vec::new();
    for file in &loaded.prompts {
        for spec in &file.prompts {
            check_lookups(&file.path, spec, tools, diags);
            let Some(p) = Prompt::compile(&file.path, spec, diags) else {
                continue;
            };
            if let Some(other) = out.iter().find(|o| o.wire == p.wire || o.id == p.id) {
                diags.push(Diagnostic::new(
                    &file.path,
                    spec.name.pos,
                    format!(
                        "prompt '{}': name is already used by prompt '{}' in {}",
                        p.id,
                        other.id,
                        other.file.display()
                    ),
                ));
                continue;
            }
            out.push(Arc::new(p));
        }
    }
    out
}

/// A completion lookup must name a tool that exists.
fn check_lookups(
    file: &std::path::Path,
    spec: &crate::config::PromptSpec,
    tools: &[Arc<Tool>],
    diags: &mut Diagnostics,
) {
    for a in &spec.arguments {
        if let Some(l) = &a.complete_from {
            let tool = &l.tool.value;
            if !tools.iter().any(|t| &t.id == tool || &t.wire == tool) {
                diags.push(Diagnostic::new(
                    file,
                    l.tool.pos,
                    format!(
                        "prompt '{}': arguments.{}.complete_from.tool: no tool is named '{tool}'",
                        spec.name.value, a.name.value
                    ),
                ));
            }
        }
    }
}

/// Two tools may not declare the same resource URI (or template): a read would not know
/// which to call.
fn check_resource_uris(tools: &[Arc<Tool>], loaded: &Loaded, diags: &mut Diagnostics) {
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for t in tools {
        let Some(r) = &t.resource else { continue };
        if let Some(first) = seen.insert(r.uri.as_str(), t.id.as_str()) {
            let pos = (loaded.tools.iter())
                .flat_map(|f| f.tools.iter())
                .find(|s| s.name.value == t.id)
                .and_then(|s| s.resource.as_ref())
                .map(|r| r.uri.pos)
                .unwrap_or_default();
            diags.push(Diagnostic::new(
                &t.file,
                pos,
                format!(
                    "tool '{}': resource.uri: '{}' is already the resource of tool '{first}'",
                    t.id, r.uri
                ),
            ));
        }
    }
}

/// `elevation.ticket_tool` names a tool of this catalog that takes a `ticket` argument.
fn check_ticket_tool(
    rules: &ElevationRules,
    tools: &[Arc<Tool>],
    path: &std::path::Path,
    diags: &mut Diagnostics,
) {
    let Some(named) = rules.ticket_tool() else {
        return;
    };
    let problem = match tools.iter().find(|t| t.id == named.value) {
        None => "no tool has this id; name the tools.d tool that looks a ticket up",
        Some(t) => {
            let props = t.listing.input_schema.get("properties");
            if props.and_then(|p| p.get("ticket")).is_some() {
                return;
            }
            "the tool has no 'ticket' argument; mcpd calls it with {\"ticket\": \"...\"}"
        }
    };
    diags.push(Diagnostic::new(
        path,
        named.pos,
        format!("elevation.ticket_tool: '{}': {problem}", named.value),
    ));
}

/// The previous catalog's compiled tool, when nothing it was built from changed: same
/// file text, same upstream client. Reuse keeps a reload of 1,000 files fast and keeps
/// an unchanged tool's runtime state.
fn reusable(
    previous: Option<&Catalog>,
    file: &ToolFile,
    spec: &ToolSpec,
    upstreams: &Upstreams,
) -> Option<Arc<Tool>> {
    let old = previous?.get(&spec.name.value)?;
    let same_file =
        old.file == file.path && old.fingerprint == file.fingerprint && old.id == spec.name.value;
    let same_upstream = upstreams
        .get(&spec.request.upstream.value)
        .is_some_and(|u| Arc::ptr_eq(u, &old.request.upstream));
    (same_file && same_upstream).then(|| old.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn unchanged_tools_are_reused_across_compiles_and_changed_ones_rebuilt() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let (loaded, diags) = crate::config::load_dir(root);
        assert!(diags.is_empty(), "{diags}");
        let vars = Vars::default();
        let first = Catalog::compile(&loaded, &vars).unwrap();
        let mut edited = loaded.clone();
        edited.tools[0].fingerprint ^= 1;
        let second = Catalog::compile_with(&edited, &vars, Some(&first)).unwrap();
        let id0 = &edited.tools[0].tools[0].name.value;
        let id1 = &edited.tools[1].tools[0].name.value;
        assert!(!Arc::ptr_eq(
            first.get(id0).unwrap(),
            second.get(id0).unwrap()
        ));
        assert!(Arc::ptr_eq(
            first.get(id1).unwrap(),
            second.get(id1).unwrap()
        ));
        // the upstream clients (and their connection pools) were kept too
        let up = |c: &Catalog| c.upstreams.get("orders").unwrap().clone();
        assert!(Arc::ptr_eq(&up(&first), &up(&second)));
    }
}
