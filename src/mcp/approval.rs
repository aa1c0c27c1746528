//! The engine's [`Approver`] over MCP: a human's approval asked with
//! `elicitation/create` (form mode) on the session that made the call.
//!
//! Owns the question's form (a change ticket, or an explicit yes), its words, and
//! reading the answer: only the elicitation response counts, and only an `accept` whose
//! content holds a ticket (for a ticket) or `approve: true` (for a yes). A client that
//! did not declare the `elicitation` capability is [`Answer::Unavailable`]: nothing is
//! asked, and the engine goes on as without an approver. The request is sent from the
//! call's own task, so over Streamable HTTP it rides the call's response stream.

use rmcp::model::{
    BooleanSchema, ElicitRequestParams, ElicitationAction, ElicitationSchema,
    PrimitiveSchemaDefinition, StringSchema,
};
use rmcp::service::{ElicitationMode, ServiceError};
use rmcp::{Peer, RoleServer};
use serde_json::Value;

use crate::engine::{Answer, ApprovalRequest, Approver};
use crate::policy::Lift;

/// The form field holding a ticket.
const TICKET: &str = "ticket";
/// The form field holding the yes.
const APPROVE: &str = "approve";

/// Asks the human at the other end of one session.
#[derive(Debug, Clone)]
pub(crate) struct ElicitApprover {
    peer: Peer<RoleServer>,
}

impl ElicitApprover {
    /// An approver asking through `peer`.
    pub(crate) fn new(peer: Peer<RoleServer>) -> Self {
        Self { peer }
    }

    /// Who answers, as far as the session knows: the client's name.
    fn client(&self) -> String {
        self.peer.peer_info().map_or_else(
            || "an MCP client".to_owned(),
            |i| i.client_info.name.clone(),
        )
    }
}

#[async_trait::async_trait]
impl Approver for ElicitApprover {
    async fn approve(&self, request: &ApprovalRequest) -> Answer {
        if !(self.peer.supported_elicitation_modes()).contains(&ElicitationMode::Form) {
            return Answer::Unavailable;
        }
        let params = ElicitRequestParams::FormElicitationParams {
            meta: None,
            message: message(request),
            requested_schema: form(request),
        };
        let by = self.client();
        match (self.peer)
            .create_elicitation_with_timeout(params, Some(request.timeout))
            .await
        {
            Ok(result) => match result.action {
                ElicitationAction::Accept => read(request.ask, result.content.as_ref(), by),
                ElicitationAction::Decline => Answer::Declined { by },
                ElicitationAction::Cancel => Answer::Cancelled,
                // A future action nobody reads as a yes.
                _ => Answer::Declined { by },
            },
            Err(ServiceError::Timeout { .. }) => Answer::TimedOut,
            Err(e) => Answer::Failed(e.to_string()),
        }
    }
}

/// What the human reads: why, what will be sent where, and what to answer.
fn message(r: &ApprovalRequest) -> String {
    let ask = match r.ask {
        Lift::Ticket => {
            let form = r
                .ticket_pattern
                .as_deref()
                .map(|p| format!(" (of the form {p})"))
                .unwrap_or_default();
            format!("Give a change ticket{form} to approve this one call, or decline.")
        }
        Lift::Confirm => "Approve this one call, or decline.".to_owned(),
    };
    format!(
        "mcpd needs a human's approval.\n\nWhy: {}\n\nWhat: {}\n\n{ask}",
        r.why, r.what
    )
}

/// The form: a required ticket, or a required yes (unticked by default).
fn form(r: &ApprovalRequest) -> ElicitationSchema {
    let builder = ElicitationSchema::builder();
    let builder = match r.ask {
        Lift::Ticket => {
            let mut s = StringSchema::new()
                .title("Change ticket")
                .description("The change ticket that approves this call, e.g. CHG-1234");
            if let Some(p) = &r.ticket_pattern {
                s = s.description(format!(
                    "The change ticket that approves this call; it must match {p}"
                ));
            }
            builder.required_property(TICKET, PrimitiveSchemaDefinition::String(s.min_length(1)))
        }
        Lift::Confirm => builder.required_property(
            APPROVE,
            PrimitiveSchemaDefinition::Boolean(
                BooleanSchema::new()
                    .title("Approve")
                    .description("Send exactly this request, once")
                    .with_default(false),
            ),
        ),
    };
    builder.build_unchecked()
}

/// An `accept`'s content as an answer: a ticket that is there, or `approve: true`;
/// anything else declines.
fn read(ask: Lift, content: Option<&Value>, by: String) -> Answer {
    let field = |name: &str| content.and_then(|c| c.get(name));
    match ask {
        Lift::Ticket => match field(TICKET).and_then(Value::as_str) {
            Some(t) if !t.trim().is_empty() => Answer::Approved {
                ticket: Some(t.trim().to_owned()),
                by,
            },
            _ => Answer::Declined { by },
        },
        Lift::Confirm => match field(APPROVE).and_then(Value::as_bool) {
            Some(true) => Answer::Approved { ticket: None, by },
            _ => Answer::Declined { by },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_a_ticket_or_an_explicit_yes_approves() {
        let by = || "host".to_owned();
        assert_eq!(
            read(Lift::Ticket, Some(&json!({"ticket": " CHG-1 "})), by()),
            Answer::Approved {
                ticket: Some("CHG-1".into()),
                by: by()
            }
        );
        for content in [json!({}), json!({"ticket": ""}), json!({"ticket": 7})] {
            assert_eq!(
                read(Lift::Ticket, Some(&content), by()),
                Answer::Declined { by: by() }
            );
        }
        assert_eq!(
            read(Lift::Confirm, Some(&json!({"approve": true})), by()),
            Answer::Approved {
                ticket: None,
                by: by()
            }
        );
        for content in [
            json!({"approve": false}),
            json!({"approve": "true"}),
            json!({"username": "testuser", "email": "test@example.com"}),
        ] {
            assert_eq!(
                read(Lift::Confirm, Some(&content), by()),
                Answer::Declined { by: by() }
            );
        }
        assert_eq!(
            read(Lift::Confirm, None, by()),
            Answer::Declined { by: by() }
        );
    }

    #[test]
    fn the_form_asks_for_exactly_what_lifts_the_denial() {
        let mut r = ApprovalRequest {
            tool: "flag.set".into(),
            what: "PUT http://flags/flags/prod/x".into(),
            why: "prod changes need a ticket [rule prod]".into(),
            ask: Lift::Ticket,
            ticket_pattern: Some("^CHG-[0-9]+$".into()),
            timeout: std::time::Duration::from_secs(60),
        };
        let schema = serde_json::to_value(form(&r)).unwrap();
        assert_eq!(schema["required"], json!(["ticket"]));
        assert_eq!(schema["properties"]["ticket"]["type"], "string");
        assert!(message(&r).contains("of the form ^CHG-[0-9]+$"));
        assert!(message(&r).contains("PUT http://flags/flags/prod/x"));
        r.ask = Lift::Confirm;
        let schema = serde_json::to_value(form(&r)).unwrap();
        assert_eq!(schema["required"], json!(["approve"]));
        assert_eq!(schema["properties"]["approve"]["default"], false);
    }
}
