//! One clean log line per JSON-RPC error mcpd answers: `json-rpc error id=7 code=-32601
//! error="method 'x' is not supported: ..."`, in text and JSON logs alike.
//!
//! rmcp logs every error response itself, at WARN, as the Rust debug form of its
//! `ErrorData` (`ErrorData { code: ErrorCode(-32601), message: "...", data: None }`).
//! This module owns turning that event into the clean line (the log layer, wrapped by
//! [`CleanRpcErrors::around`], hands it to [`CleanRpcErrors`], which logs [`log`]
//! instead; the log filter keeps the original out of the logs), and the
//! line itself, which mcpd's own transport uses for the errors it answers before rmcp
//! sees a message. It must not log the params or arguments of the request.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;

/// Logs one JSON-RPC error mcpd answered (`id` is `None` when the request's id could not
/// be read).
pub fn log(id: Option<&str>, code: i64, message: &str) {
    tracing::info!(target: "mcpd::mcp", id = id.unwrap_or("null"), code, error = message, "json-rpc error");
}

/// Whether `meta` is rmcp's own event for an error response (`response error`, with
/// `id` and `error` fields, at WARN).
pub fn is_rmcp_error_event(meta: &Metadata<'_>) -> bool {
    meta.is_event()
        && *meta.level() == Level::WARN
        && meta.target().starts_with("rmcp")
        && meta.fields().field("id").is_some()
        && meta.fields().field("error").is_some()
}

/// Reads rmcp's error events and logs the clean line in their place (it ignores every
/// other event); [`CleanRpcErrors::around`] puts it in front of the log layer.
#[derive(Debug, Default)]
pub struct CleanRpcErrors;

impl<S: Subscriber> tracing_subscriber::Layer<S> for CleanRpcErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        if !is_rmcp_error_event(event.metadata()) {
            return;
        }
        let mut fields = Fields::default();
        event.record(&mut fields);
        match parse_error_data(&fields.error) {
            Some((code, message)) => log(Some(&fields.id), code, &message),
            // A form this parser does not know (another rmcp version): still one line.
            None => log(Some(&fields.id), 0, &fields.error),
        }
    }
}

impl CleanRpcErrors {
    /// `log_layer` with rmcp's error events taken from it and turned into the clean
    /// line: one layer, so under one filter a span entered or left is looked up once.
    pub fn around<L>(log_layer: L) -> WithCleanErrors<L> {
        WithCleanErrors(log_layer)
    }
}

/// A log layer that gets every event but rmcp's error events, which [`CleanRpcErrors`]
/// turns into the clean line. Give it a filter that lets those events through.
#[derive(Debug)]
pub struct WithCleanErrors<L>(L);

impl<S: Subscriber, L: tracing_subscriber::Layer<S>> tracing_subscriber::Layer<S>
    for WithCleanErrors<L>
{
    fn on_register_dispatch(&self, subscriber: &tracing::Dispatch) {
        self.0.on_register_dispatch(subscriber);
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        self.0.on_layer(subscriber);
    }

    fn register_callsite(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        self.0.register_callsite(meta)
    }

    fn enabled(&self, meta: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.0.enabled(meta, ctx)
    }

    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.0.on_new_span(attrs, id, ctx);
    }

    fn on_record(
        &self,
        span: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: Context<'_, S>,
    ) {
        self.0.on_record(span, values, ctx);
    }

    fn on_follows_from(
        &self,
        span: &tracing::span::Id,
        follows: &tracing::span::Id,
        ctx: Context<'_, S>,
    ) {
        self.0.on_follows_from(span, follows, ctx);
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.0.event_enabled(event, ctx)
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if is_rmcp_error_event(event.metadata()) {
            <CleanRpcErrors as tracing_subscriber::Layer<S>>::on_event(&CleanRpcErrors, event, ctx);
        } else {
            self.0.on_event(event, ctx);
        }
    }

    fn on_enter(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_enter(id, ctx);
    }

    fn on_exit(&self, id: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_exit(id, ctx);
    }

    fn on_close(&self, id: tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_close(id, ctx);
    }

    fn on_id_change(&self, old: &tracing::span::Id, new: &tracing::span::Id, ctx: Context<'_, S>) {
        self.0.on_id_change(old, new, ctx);
    }
}

#[derive(Default)]
struct Fields {
    id: String,
    error: String,
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let slot = match field.name() {
            "id" => &mut self.id,
            "error" => &mut self.error,
            _ => return,
        };
        let _ = write!(slot, "{value:?}");
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        match field.name() {
            "id" => value.clone_into(&mut self.id),
            "error" => value.clone_into(&mut self.error),
            _ => {}
        }
    }
}

/// The code and message of an `ErrorData`'s debug form.
fn parse_error_data(debug: &str) -> Option<(i64, String)> {
    let code = debug
        .split_once("code: ErrorCode(")?
        .1
        .split_once(')')?
        .0
        .parse()
        .ok()?;
    let mut chars = debug.split_once("message: \"")?.1.chars();
    let mut message = String::new();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some((code, message)),
            '\\' => match chars.next()? {
                'n' => message.push('\n'),
                't' => message.push('\t'),
                'r' => message.push('\r'),
                '0' => message.push('\0'),
                'u' => {
                    let hex: String = chars
                        .by_ref()
                        .skip_while(|c| *c == '{')
                        .take_while(|c| *c != '}')
                        .collect();
                    message.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                }
                other => message.push(other),
            },
            other => message.push(other),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_debug_form_of_an_error_gives_its_code_and_message() {
        let debug = r#"ErrorData { code: ErrorCode(-32601), message: "method 'x' is \"not\" here\n\u{e9}", data: Some(Object {"method": String("x")}) }"#;
        assert_eq!(
            parse_error_data(debug),
            Some((-32601, "method 'x' is \"not\" here\né".to_owned()))
        );
        let real = format!(
            "{:?}",
            rmcp::ErrorData::invalid_params("bad 'cursor' \"x\"", None)
        );
        assert_eq!(
            parse_error_data(&real),
            Some((-32602, "bad 'cursor' \"x\"".to_owned()))
        );
        assert_eq!(parse_error_data("something else"), None);
    }
}
