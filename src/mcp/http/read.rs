//! Reading a POST's body for the direct path: a `tools/call` (read straight into rmcp's
//! types when it has exactly the members clients send), a `notifications/cancelled`, or
//! anything else, which is rmcp's to read and answer.
//!
//! Owns that reading only: it must read a call exactly as rmcp's own message type would
//! (the tests compare the two), and it decides nothing about the call.

use rmcp::model::{
    CallToolRequestParams, ClientJsonRpcMessage, ClientNotification, ClientRequest, GetMeta as _,
    RequestId, RequestMetaObject,
};

use crate::mcp::plain::PlainCall;

/// What a POST's body is, as far as the direct path cares.
pub(super) enum Read {
    /// A `tools/call`: its id, its params, and the `_meta` rmcp takes out of them.
    Call(RequestId, CallToolRequestParams, RequestMetaObject),
    /// `notifications/cancelled` for a request.
    Cancelled(RequestId),
    /// Anything else, including what does not parse: rmcp's to answer.
    Other,
}

pub(super) fn read(bytes: &[u8]) -> Read {
    if let Some(call) = PlainCall::read(bytes) {
        return Read::Call(call.id, call.params, RequestMetaObject::default());
    }
    match serde_json::from_slice::<ClientJsonRpcMessage>(bytes) {
        Ok(ClientJsonRpcMessage::Request(r)) => {
            // rmcp takes `_meta` out of the params when it reads a request.
            let meta = r.request.get_meta().clone();
            match r.request {
                ClientRequest::CallToolRequest(call) => Read::Call(r.id, call.params, meta),
                _ => Read::Other,
            }
        }
        Ok(ClientJsonRpcMessage::Notification(n)) => match n.notification {
            ClientNotification::CancelledNotification(c) => {
                c.params.request_id.map_or(Read::Other, Read::Cancelled)
            }
            _ => Read::Other,
        },
        _ => Read::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A call as rmcp's own type reads it: its id, name, arguments, and every `_meta`
    /// member (wherever rmcp put it).
    type Seen = (
        RequestId,
        String,
        Option<serde_json::Value>,
        serde_json::Map<String, serde_json::Value>,
    );

    fn as_rmcp_reads(body: &str) -> Option<Seen> {
        let ClientJsonRpcMessage::Request(r) = serde_json::from_str(body).ok()? else {
            return None;
        };
        let mut meta = r.request.get_meta().0.0.clone();
        let ClientRequest::CallToolRequest(call) = r.request else {
            return None;
        };
        meta.extend(call.params.meta.clone().map(|m| m.0.0).unwrap_or_default());
        let args = call.params.arguments.clone().map(serde_json::Value::Object);
        Some((r.id, call.params.name.to_string(), args, meta))
    }

    #[test]
    fn a_call_is_read_as_rmcp_reads_it_and_anything_else_is_left_to_rmcp() {
        let calls = [
            r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"t","arguments":{"a":[1,{"b":null}]}}}"#,
            r#"{"method":"tools/call","params":{"name":"t"},"id":"x-1","jsonrpc":"2.0"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","_meta":{"progressToken":3,"dev.mcpd/idempotencyKey":"k"}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t","extra":1}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"},"extra":true}"#,
        ];
        for body in calls {
            let want = as_rmcp_reads(body).unwrap_or_else(|| panic!("rmcp reads {body}"));
            let Read::Call(id, params, meta) = read(body.as_bytes()) else {
                panic!("not read as a call: {body}");
            };
            let mut all = meta.0.0.clone();
            all.extend(params.meta.clone().map(|m| m.0.0).unwrap_or_default());
            let args = params.arguments.clone().map(serde_json::Value::Object);
            assert_eq!((id, params.name.to_string(), args, all), want, "{body}");
        }
        // What rmcp refuses or reads as something else is not a call here either.
        let others = [
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            r#"{"jsonrpc":"1.0","id":1,"method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tools/call","params":{"name":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"},"result":{}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"arguments":{}}}"#,
            r#"[{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"t"}}]"#,
            "not json",
        ];
        for body in others {
            assert!(as_rmcp_reads(body).is_none(), "rmcp reads a call in {body}");
            assert!(!matches!(read(body.as_bytes()), Read::Call(..)), "{body}");
        }
        let cancel =
            r#"{"jsonrpc":"2.0","method":"notifications/cancelled","params":{"requestId":4}}"#;
        assert!(matches!(
            read(cancel.as_bytes()),
            Read::Cancelled(RequestId::Number(4))
        ));
    }
}
