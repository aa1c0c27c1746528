//! `mcpd explain`: which rules a call meets and the decision, without calling upstream.

use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use serde_json::{Value, json};

use crate::catalog::Tool;
use crate::config::Vars;
use crate::config::policy::Mode;
use crate::policy::{Facts, Request, Sent, effect_name};

/// Who the explained call is made as (defaults: the configured actor).
#[derive(Debug, Default, clap::Args)]
pub struct AsActor {
    /// The actor's subject, e.g. agent:copilot.
    #[arg(long)]
    pub subject: Option<String>,
    /// The actor's data region, e.g. eu.
    #[arg(long)]
    pub region: Option<String>,
    /// The actor's purpose, e.g. support.
    #[arg(long)]
    pub purpose: Option<String>,
    /// A scope the actor holds (repeat for several).
    #[arg(long = "scope")]
    pub scopes: Vec<String>,
    /// Explain as if the actor held an elevation with this ticket.
    #[arg(long)]
    pub ticket: Option<String>,
}

/// Prints every rule's outcome and the decision; exit 0 when allowed, 1 when denied.
pub(super) fn run(dir: &Path, tool: &str, args: &str, who: &AsActor) -> anyhow::Result<ExitCode> {
    let args: Value = serde_json::from_str(args).context("--args is not valid JSON")?;
    // Explain never sends, so it needs no secret: templates see placeholders.
    let catalog = super::load_catalog(dir, &Vars::from_env().with_placeholder_secrets())?;
    let tool = catalog
        .get(tool)
        .with_context(|| format!("unknown tool '{tool}' (mcpd validate lists the tools)"))?
        .clone();
    let mut actor = (catalog.default_actor)
        .as_ref()
        .map_or(Value::Null, |a| a.facts().clone());
    if let Value::Object(a) = &mut actor {
        for (k, v) in [
            ("subject", &who.subject),
            ("region", &who.region),
            ("purpose", &who.purpose),
        ] {
            if let Some(v) = v {
                a.insert(k.to_owned(), json!(v));
            }
        }
        if !who.scopes.is_empty() {
            a.insert("scopes".to_owned(), json!(who.scopes));
        }
    }
    let elevation = who
        .ticket
        .as_ref()
        .map(|t| json!({ "ticket": t, "granted_by": "explain" }));
    outln!("tool      {} (wire name {})", tool.id, tool.wire);
    outln!("actor     {actor}");
    let invalid: Vec<String> = tool
        .input
        .iter_errors(&args)
        .map(|e| format!("{}: {e}", e.instance_path()))
        .collect();
    if !invalid.is_empty() {
        outln!("arguments INVALID: {}", invalid.join("; "));
        outln!("decision  refused before policy: the arguments do not match the input schema");
        return Ok(ExitCode::FAILURE);
    }
    outln!("arguments valid");
    let plan = &tool.request;
    let mut request = Request {
        upstream: &plan.upstream.name,
        method: plan.method.as_str(),
        path_shape: &plan.path_shape,
        sent: None,
    };
    // Rendered as a call would be when a rule selects or reads what is sent.
    let sent = if catalog.policy.needs_request(&tool.id, &request) {
        let rendered = tool
            .secrets
            .as_ref()
            .map_err(ToString::to_string)
            .and_then(|secrets| {
                let args = crate::template::to_value(&args);
                (plan.render_parts(&tool.id, &tool.templates, &args, secrets))
                    .map_err(|e| e.to_string())
            });
        match rendered {
            Ok(parts) => {
                let sent = Sent::new(
                    request.upstream,
                    request.method,
                    &parts.path,
                    &parts.query,
                    parts.body.as_ref(),
                );
                outln!(
                    "judged    {} {} (upstream {})",
                    request.method,
                    sent.path,
                    request.upstream
                );
                Some(sent)
            }
            Err(e) => {
                outln!("judged    the request cannot be rendered: {e}");
                None
            }
        }
    } else {
        None
    };
    request.sent = sent.as_ref();
    let d = catalog.policy.explain(&Facts {
        tool: &tool.id,
        request,
        args: &args,
        actor: &actor,
        elevation: elevation.as_ref(),
        env: &catalog.env,
    });
    outln!("rules");
    let mut outcomes = d.outcomes.clone();
    // In file order, as the user wrote them.
    outcomes.sort_by_key(|o| catalog.policy.position(&o.id));
    for o in &outcomes {
        let mode = if o.mode == Mode::Shadow {
            "shadow "
        } else {
            "enforce"
        };
        let state = match (&o.error, o.applies, o.matched) {
            (Some(e), _, _) => format!("ERROR ({e})"),
            (None, false, _) if o.path_mismatch => "path does not match".to_owned(),
            (None, false, _) => "not for this tool".to_owned(),
            (None, true, true) => "MATCHED".to_owned(),
            (None, true, false) => "condition false".to_owned(),
        };
        outln!("  {:<28} {mode} {:<8} {state}", o.id, effect_name(o.effect));
    }
    if let Some(r) = &d.route {
        outln!("route     region '{r}'");
    }
    if !d.detectors.is_empty() {
        outln!("redact    {} (detectors run over the result)", d.detectors);
    }
    if !d.shadow.is_empty() {
        outln!("shadow    would have: {}", d.shadow.join(", "));
    }
    match &d.denial {
        None => {
            outln!(
                "request   {}",
                request_line(&tool, &args, d.route.as_deref())
            );
            outln!("decision  ALLOW (no upstream request was made)");
            Ok(ExitCode::SUCCESS)
        }
        Some((rule, reason)) => {
            outln!("decision  DENY by {rule}: {reason}");
            Ok(ExitCode::FAILURE)
        }
    }
}

/// The request the call would send: method and final URL (the upstream's, or the routed
/// region's), with each secret shown as `[secret NAME]`; or why there would be none.
fn request_line(tool: &Tool, args: &Value, region: Option<&str>) -> String {
    let upstream = &tool.request.upstream;
    let Some(base) = upstream.base_for(region) else {
        return format!(
            "none: upstream '{}' has no '{}' endpoint, so the call is refused",
            upstream.name,
            region.unwrap_or_default()
        );
    };
    let secrets = match &tool.secrets {
        Ok(s) => s,
        Err(e) => return format!("cannot be built: {e}"),
    };
    let args = crate::template::to_value(args);
    match (tool.request).render(&tool.id, &tool.templates, base, &args, secrets) {
        Ok(req) => {
            // The values are placeholders (URL-safe), so scrubbing finds them verbatim.
            let url = secrets.scrub(req.url.to_string());
            format!("{} {url}", req.method)
        }
        Err(e) => format!("cannot be built: {e}"),
    }
}
