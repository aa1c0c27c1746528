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
            let g = elevation::grant(store.as_ref(), identity, &catalog.elevation, &req)
                .await
                .map_err(anyhow::Error::msg)?;
            println!(
                "granted {}: {} may call {}{} under ticket {} for {} (granted by {})",
                g.jti,
                g.sub,
                g.tool,
                g.env
                    .as_deref()
                    .map(|e| format!(" in {e}"))
                    .unwrap_or_default(),
                g.ticket,
                crate::util::duration::human(req.ttl),
                g.granted_by
            );
        }
        Action::List(subject) => {
            let grants = elevation::list(store.as_ref(), identity, subject.as_deref())
                .await
                .map_err(anyhow::Error::msg)?;
            if grants.is_empty() {
                println!("no live elevation grants");
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for g in grants {
                println!(
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
                println!("revoked {id}");
            } else {
                eprintln!("no live grant with id '{id}' ('mcpd elevate --list' shows them)");
                return Ok(ExitCode::FAILURE);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
