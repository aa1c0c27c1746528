//! Step 11b: how a result is shown to the model beside its JSON.
//!
//! Owns adapting the reply and the result to the tool's presentation plan: an `image/*`
//! or `audio/*` reply becomes media (the JSON only describes it), a `text/*` reply's
//! text is sent as text, `response.text` renders the result for the model, and a
//! result whose JSON is larger than `response.max_inline_bytes` is kept for the caller
//! in the state store ([`crate::results`]) and replaced by its first rows, a summary and
//! a link. What is kept is the result as it would have been sent: already masked and
//! redacted. A replayed result is presented the same way (its media is not kept).

use serde_json::{Value, json};

use super::report::Level;
use super::result::{Failure, Link};
use super::{Call, Engine};
use crate::response::present::{Kind, cut, essence, kind, summary};
use crate::results::{self, Kept};
use crate::upstream::Reply;

/// In step 11: an image or audio reply, as media and the JSON that describes it (it
/// passes no detector: it is not text).
pub(super) fn media(c: &mut Call<'_>, reply: &Reply) -> Option<Value> {
    let mime = reply.content_type.as_deref().map(essence);
    c.result.shown.mime.clone_from(&mime);
    let (Kind::Image | Kind::Audio, Some(mime)) = (kind(mime.as_deref()), mime) else {
        return None;
    };
    let described = json!({ "content_type": mime, "bytes": reply.body.len() });
    c.result.shown.media = Some((mime, reply.body.clone()));
    Some(described)
}

/// In step 11: a text reply (not JSON) is sent as its text, redacted as the result is.
pub(super) fn text_reply(c: &mut Call<'_>, was_text: bool, structured: &Value) {
    if was_text {
        c.result.shown.text = structured
            .get("result")
            .and_then(Value::as_str)
            .map(str::to_owned);
    }
}

impl Engine {
    /// Step 11b: keeps a result too large to send inline and links it, renders the
    /// tool's text, names the embedded copy.
    pub(super) async fn present(&self, c: &mut Call<'_>) {
        let Ok(value) = &c.result.outcome else {
            return;
        };
        let plan = &c.tool.present;
        if c.result.shown.media.is_none() {
            // Serialised once: its size decides the link, and an inline result's text
            // block is this JSON.
            // Its quoted form (the text block of an answer written around the JSON) in
            // the same pass, for a result sent inline on a path that writes one.
            let max =
                (c.ctx.quote_json).then(|| usize::try_from(plan.max_inline).unwrap_or(usize::MAX));
            let crate::response::json::Written { json, quoted } =
                crate::response::json::write(value, max);
            let bytes = json.len() as u64;
            if bytes > plan.max_inline {
                // Moved out, not cloned: a large result is the call's largest allocation.
                let value = c
                    .result
                    .outcome
                    .as_mut()
                    .map(std::mem::take)
                    .unwrap_or_default();
                c.result.outcome = self.link(c, value, json, bytes).await;
            } else {
                c.result.shown.json = Some(json);
                c.result.shown.quoted = quoted;
            }
        }
        if let Some(tpl) = &plan.text
            && let Ok(result) = &c.result.outcome
        {
            let ctx = minijinja::context! {
                result => crate::template::to_value(result),
                args => c.template_args().clone(),
            };
            match c.tool.templates.render_text(tpl, &ctx) {
                Ok(text) => c.result.shown.text = Some(text),
                Err(e) => {
                    let tool = &c.tool.id;
                    tracing::warn!(tool = %tool, error = %e, "response.text failed; the result is sent as JSON");
                    c.log(Level::Warning, || {
                        format!("{tool}: response.text failed ({e}); the result is sent as JSON")
                    });
                }
            }
        }
        if let Some(tpl) = &plan.embed {
            let ctx = minijinja::context! { args => c.template_args().clone() };
            c.result.shown.embed = c.tool.templates.render_text(tpl, &ctx).ok();
        }
    }

    /// Keeps `value` (`json`, `bytes` long) for the caller and returns what is sent
    /// instead: its first rows, which must still match the tool's output schema.
    async fn link(
        &self,
        c: &mut Call<'_>,
        value: Value,
        json: String,
        bytes: u64,
    ) -> Result<Value, Failure> {
        let plan = &c.tool.present;
        // A text reply is kept as its text; anything else as JSON.
        let (mime, text) = match c.result.shown.text.take() {
            Some(t) => (
                c.result
                    .shown
                    .mime
                    .clone()
                    .unwrap_or_else(|| "text/plain".into()),
                t,
            ),
            None => ("application/json".to_owned(), json),
        };
        let kept = Kept {
            tool: c.tool.id.clone(),
            mime: mime.clone(),
            text,
            created_ms: self.clock.now_ms(),
        };
        let uri = results::keep(self.store.as_ref(), &c.result.actor, &kept, plan.keep_for)
            .await
            .map_err(|e| {
                Failure::State(format!(
                    "the result ({}) is too large to send inline and could not be kept: {e}",
                    crate::response::present::size(bytes)
                ))
            })?;
        let shortened = cut(&value, plan.max_inline);
        let summary = summary(
            &c.tool.id,
            usize::try_from(bytes).unwrap_or(usize::MAX),
            plan.max_inline,
            &uri,
            plan.keep_for,
            shortened.as_ref(),
        );
        c.log(Level::Info, || summary.clone());
        c.result.shown.link = Some(Link {
            uri,
            summary,
            bytes,
            mime,
        });
        let shown = shortened.map_or_else(|| json!({}), |s| s.value);
        if let Some(out) = &c.tool.output
            && !out.is_valid(&shown)
        {
            tracing::warn!(tool = %c.tool.id, "the shortened result does not match the output schema; it is sent anyway, with its link");
        }
        Ok(shown)
    }
}
