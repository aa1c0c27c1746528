//! A prompt file in `prompts.d/`: the common prompts of a team's tools, served as MCP
//! prompts (`prompts/list`, `prompts/get`) with completion for their arguments.
//!
//! The file model only (strict, documented, with positions); the catalog compiles the
//! templates and checks the names a prompt refers to.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::Deserialize;

use super::Located;

/// One prompt: what hosts list (name, title, description, arguments) and the messages
/// it becomes.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptSpec {
    /// The prompt id, `[A-Za-z0-9_.-]{1,64}`, e.g. `orders.export-masked`. On the wire dots
    /// become underscores, as for tools; `prompts/get` accepts both.
    pub name: Located<String>,
    /// A short human-readable title hosts show (e.g. as a slash command's label).
    #[serde(default)]
    pub title: Option<String>,
    /// What the prompt is for, shown to the human choosing it.
    pub description: String,
    /// The arguments the human fills in, in order.
    #[serde(default)]
    pub arguments: Vec<PromptArgSpec>,
    /// The messages the prompt becomes, in order; at least one.
    pub messages: Vec<MessageSpec>,
}

/// One argument of a prompt.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PromptArgSpec {
    /// Its name, read in templates as `args.NAME` (letters, digits, `_`).
    pub name: Located<String>,
    /// What to fill in.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether `prompts/get` needs it (default `false`: templates read a missing one as
    /// undefined, so write `{{ args.NAME | default('...') }}`).
    #[serde(default)]
    pub required: bool,
    /// Suggestions for `completion/complete`: these values (those starting with what was
    /// typed, case-insensitive, are offered).
    #[serde(default)]
    pub complete: Option<Vec<String>>,
    /// Or suggestions from a call of a tool (by the caller, under the same policy as any
    /// call): the values a JSONPath selects in its result.
    #[serde(default)]
    pub complete_from: Option<LookupSpec>,
}

/// A completion lookup: a call of a tool (by the caller, under policy), and where the
/// values are in its result.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LookupSpec {
    /// The tool to call.
    pub tool: Located<String>,
    /// Its arguments: templates over `args` (the prompt's arguments given so far) and
    /// `value` (what was typed); a single `{{ expr }}` keeps its type.
    #[serde(default)]
    pub args: BTreeMap<String, Located<String>>,
    /// A JSONPath into the tool's result selecting the values, e.g. `$.orders[*].id`;
    /// each is offered as text.
    pub select: Located<String>,
}

/// Who a message is from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RoleSpec {
    /// The human (default).
    #[default]
    User,
    /// The assistant.
    Assistant,
}

/// One message: exactly one of `text`, `resource` or `image`.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageSpec {
    /// `user` (default) or `assistant`.
    #[serde(default)]
    pub role: RoleSpec,
    /// The message text: a template over `args`.
    #[serde(default)]
    pub text: Option<Located<String>>,
    /// A resource to embed (a template over `args`, e.g. `runbook://{{ args.name }}`),
    /// read through mcpd when the prompt is got, under the same policy as a call.
    #[serde(default)]
    pub resource: Option<Located<String>>,
    /// A resource whose reply is an image, embedded as image content.
    #[serde(default)]
    pub image: Option<Located<String>>,
}
