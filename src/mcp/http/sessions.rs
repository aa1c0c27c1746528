//! MCP sessions in the state store, so any replica serves any request.
//!
//! rmcp keeps a session's live half (its task, its SSE streams) in the process that
//! answered `initialize`. This module gives rmcp's `SessionStore` what it needs to
//! rebuild that half anywhere: the client's `initialize` parameters, under
//! `session:<id>` in mcpd's state store (Redis when replicas share one). A request
//! naming a session this replica has never seen (a balancer without affinity, or the
//! replica that held it died) is served after rmcp replays the handshake from the
//! stored parameters; the client notices nothing. Each load renews the entry's expiry,
//! so a session in use never ends; one left alone ends after [`SESSION_TTL`], and a
//! `DELETE` ends it at once.
//!
//! It must not hold anything a call depends on: who calls is proved by the bearer token
//! on every request, and every limit, key and grant is already in the store.

use std::sync::Arc;
use std::time::Duration;

use rmcp::transport::streamable_http_server::session::{
    SessionState, SessionStore, SessionStoreError,
};

use crate::store::{Store, ns};

/// How long a session nobody uses stays restorable.
pub(crate) const SESSION_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// rmcp's session store over mcpd's state store.
#[derive(Debug, Clone)]
pub(crate) struct StoredSessions {
    store: Arc<dyn Store>,
}

impl StoredSessions {
    /// Sessions kept in `store`.
    pub(crate) fn new(store: Arc<dyn Store>) -> Self {
        Self { store }
    }

    fn key(id: &str) -> String {
        format!("{}{id}", ns::SESSION)
    }

    /// Whether a live session `id` is stored (for `DELETE` of a session another replica
    /// started).
    pub(crate) async fn has(&self, id: &str) -> Result<bool, crate::store::StoreError> {
        Ok(self.store.get(&Self::key(id)).await?.is_some())
    }
}

#[async_trait::async_trait]
impl SessionStore for StoredSessions {
    async fn load(&self, session_id: &str) -> Result<Option<SessionState>, SessionStoreError> {
        let key = Self::key(session_id);
        let Some(bytes) = self.store.get(&key).await? else {
            return Ok(None);
        };
        let state: SessionState = serde_json::from_slice(&bytes)?;
        // In use: renew it, so a session ends only after SESSION_TTL without requests.
        self.store.put(&key, &bytes, SESSION_TTL).await?;
        Ok(Some(state))
    }

    async fn store(&self, session_id: &str, state: &SessionState) -> Result<(), SessionStoreError> {
        let bytes = serde_json::to_vec(state)?;
        self.store
            .put(&Self::key(session_id), &bytes, SESSION_TTL)
            .await?;
        Ok(())
    }

    async fn delete(&self, session_id: &str) -> Result<(), SessionStoreError> {
        self.store.delete(&Self::key(session_id)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn params() -> rmcp::model::InitializeRequestParams {
        serde_json::from_value(serde_json::json!({
            "protocolVersion": "2025-11-25", "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"}}))
        .unwrap()
    }

    #[tokio::test]
    async fn a_stored_session_loads_until_it_is_deleted() {
        let sessions = StoredSessions::new(Arc::new(MemoryStore::new()));
        assert!(sessions.load("s1").await.unwrap().is_none());
        sessions
            .store("s1", &SessionState::new(params()))
            .await
            .unwrap();
        let loaded = sessions.load("s1").await.unwrap().unwrap();
        assert_eq!(loaded.initialize_params.client_info.name, "t");
        assert!(sessions.has("s1").await.unwrap());
        sessions.delete("s1").await.unwrap();
        assert!(sessions.load("s1").await.unwrap().is_none());
        assert!(!sessions.has("s1").await.unwrap());
    }
}
