//! `mcpd elevate`: grant, list and revoke just-in-time elevations.

use std::path::Path;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Vars;
use crate::identity::elevation::{self, GrantRequest};

/// What to do.
#[derive(Debug)]
pub(super) enum Action {
    /// Record a grant.
    Grant(GrantRequest),
    /// List live grants.
    List(Option<String>),
    /// Remove a grant by id.
    Revoke(String),
}

/// Runs one action against the state store the config names (shared with a running
/// `mcpd serve`).
pub(super) async fn run(dir: &Path, action: Action) -> anyhow::Result<ExitCode> {
    let (loaded, catalog) = super::load(dir, &Vars::from_env())?;
    let identity = catalog.identity.as_ref().ok_or_else(|| {
        anyhow::anyhow!(
            "mcpd.yaml has no 'identity:' section: grants are signed with the identity key"
        )
    })?;
    let store = super::open_store(dir, &loaded.server.1).await?;
    match action {
        Action::Grant(req) => {
            // A grant is audited, with its ticket: open the log before granting.
            let audit = super::open_audit(dir, &loaded.server.1).unwrap_or_else(|e| {
                eprintln!("warning: this grant is not recorded in the audit log: {e:#}");
                None
            });
            let g = elevation::grant(store.as_ref(), identity, &catalog.elevation, &req)
                .await
                .map_err(anyhow::Error::msg)?;
            if let Some(audit) = &audit {
                audit.record(&crate::audit::GrantEntry {
                    event: "grant",
                    actor: g.granted_by.clone(),
                    grant: g.jti.clone(),
                    subject: g.sub.clone(),
                    tool: g.tool.clone(),
                    env: g.env.clone(),
                    ticket: g.ticket.clone(),
                    expires: g.exp,
                });
                audit.flush();
            }
            outln!(
                "granted {}: {} may call {}{} under ticket {} for {} (granted by {})",
                g.jti,
                g.sub,
                g.tool,
                g.env
                    .as_deref()
                    .map(|e| format!(" in {e}"))
                    .unwrap_or_default(),
                g.ticket,
                crate::util::duration::human(Duration::from_secs(g.exp.saturating_sub(g.iat))),
                g.granted_by
            );
            if g.exp.saturating_sub(g.iat) < req.ttl.as_secs() {
                outln!("(shortened: the ticket's change window closes then)");
            }
        }
        Action::List(subject) => {
            let grants = elevation::list(store.as_ref(), identity, subject.as_deref())
                .await
                .map_err(anyhow::Error::msg)?;
            if grants.is_empty() {
                outln!("no live elevation grants");
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for g in grants {
                outln!(
                    "{}  {}  {}{}  ticket {}  by {}  expires in {}",
                    g.jti,
                    g.sub,
                    g.tool,
                    g.env
                        .as_deref()
                        .map(|e| format!(":{e}"))
                        .unwrap_or_default(),
                    g.ticket,
                    g.granted_by,
                    crate::util::duration::human(Duration::from_secs(g.exp.saturating_sub(now)))
                );
            }
        }
        Action::Revoke(id) => {
            if elevation::revoke(store.as_ref(), identity, &id)
                .await
                .map_err(anyhow::Error::msg)?
            {
                outln!("revoked {id}");
            } else {
                eprintln!("no live grant with id '{id}' ('mcpd elevate --list' shows them)");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
