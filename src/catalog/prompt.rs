//! A compiled prompt: what one `prompts.d` entry becomes, and compiling it, collecting
//! every problem.
//!
//! Owns a prompt's checks (its name, its arguments, its messages' templates and the
//! arguments they read, its completion lookups' templates and JSONPaths) and its
//! `prompts/list` entry. Checks against the tools (a lookup's tool exists) are the
//! catalog's. It never renders or reads anything.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use crate::config::Located;
use crate::config::diag::{Diagnostic, Diagnostics, Pos};
use crate::config::prompt::{MessageSpec, PromptSpec, RoleSpec};
use crate::response::jsonpath::JsonPath;
use crate::template::{Slot, TemplateSet, Tpl};

use super::tool::wire_name;

/// Longest prompt id, as for tools.
const MAX_NAME: usize = 64;

/// One compiled prompt.
#[derive(Debug)]
pub struct Prompt {
    /// The id from the file, e.g. `orders.export-masked`.
    pub id: String,
    /// The name on the wire (dots become underscores).
    pub wire: String,
    /// The file it came from.
    pub file: PathBuf,
    /// What `prompts/list` shows for it.
    pub listing: rmcp::model::Prompt,
    /// Its arguments, in order.
    pub arguments: Vec<Arg>,
    /// Its messages, in order.
    pub messages: Vec<Message>,
    /// Its compiled templates.
    pub templates: TemplateSet,
}

/// One argument.
#[derive(Debug)]
pub struct Arg {
    /// Its name.
    pub name: String,
    /// Whether `prompts/get` needs it.
    pub required: bool,
    /// Where its completion suggestions come from.
    pub complete: Option<Complete>,
}

/// Where completion suggestions come from.
#[derive(Debug)]
pub enum Complete {
    /// Fixed values.
    Values(Vec<String>),
    /// A call of `tool` with these argument templates; `select` picks the values.
    Lookup {
        /// The tool id.
        tool: String,
        /// Its position in the file, for the cross-check.
        pos: Pos,
        /// Argument templates over `args` and `value`.
        args: Vec<(String, Tpl)>,
        /// Where the values are in the result.
        select: JsonPath,
    },
}

/// One message.
#[derive(Debug)]
pub struct Message {
    /// Who it is from.
    pub role: rmcp::model::Role,
    /// What it holds.
    pub body: Body,
}

/// What a message holds.
#[derive(Debug)]
pub enum Body {
    /// Text (a template over `args`).
    Text(Tpl),
    /// A resource to embed (a URI template over `args`).
    Resource(Tpl),
    /// A resource whose reply is an image.
    Image(Tpl),
}

impl Prompt {
    /// Compiles `spec` from `file`, reporting every problem.
    pub fn compile(file: &Path, spec: &PromptSpec, diags: &mut Diagnostics) -> Option<Self> {
        let before = diags.len();
        let id = spec.name.value.as_str();
        let mut err = |pos: Pos, msg: String| {
            diags.push(Diagnostic::new(file, pos, format!("prompt '{id}': {msg}")));
        };
        let ok = !id.is_empty()
            && id.len() <= MAX_NAME
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c));
        if !ok {
            err(
                spec.name.pos,
                format!("name: must be 1 to {MAX_NAME} of A-Z a-z 0-9 _ . - (got '{id}')"),
            );
        }
        let mut templates = TemplateSet::new();
        let mut names = BTreeSet::new();
        for a in &spec.arguments {
            let n = &a.name.value;
            if n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                err(
                    a.name.pos,
                    format!("arguments: '{n}' is not a name (letters, digits, '_')"),
                );
            }
            if !names.insert(n.clone()) {
                err(a.name.pos, format!("arguments: '{n}' is listed twice"));
            }
        }
        let mut compile = |field: &str,
                           src: &Located<String>,
                           slot: Slot,
                           roots: &[&str],
                           err: &mut dyn FnMut(Pos, String)| {
            match templates.add(&format!("prompt:{id}/{field}"), &src.value, slot) {
                Ok((tpl, vars)) => {
                    for var in vars {
                        let mut parts = var.split('.');
                        let root = parts.next().unwrap_or_default();
                        if !roots.contains(&root) {
                            err(
                                src.pos,
                                format!(
                                    "{field}: unknown variable '{var}' (it can read: {})",
                                    roots.join(", ")
                                ),
                            );
                        } else if root == "args"
                            && let Some(arg) = parts.next()
                            && !names.contains(arg)
                        {
                            let declared: Vec<&str> = names.iter().map(String::as_str).collect();
                            err(
                                src.pos,
                                format!(
                                    "{field}: '{var}' is not an argument of the prompt (it has: {})",
                                    declared.join(", ")
                                ),
                            );
                        }
                    }
                    Some(tpl)
                }
                Err(e) => {
                    err(src.pos, format!("{field}: template error: {e}"));
                    None
                }
            }
        };
        let mut arguments = Vec::new();
        for a in &spec.arguments {
            if a.complete.is_some() && a.complete_from.is_some() {
                err(
                    a.name.pos,
                    format!(
                        "arguments.{}: set complete or complete_from, not both",
                        a.name.value
                    ),
                );
            }
            let complete = match (&a.complete, &a.complete_from) {
                (None, None) => None,
                (Some(v), _) => Some(Complete::Values(v.clone())),
                (None, Some(l)) => {
                    let field = format!("arguments.{}.complete_from", a.name.value);
                    let mut args = Vec::new();
                    for (k, v) in &l.args {
                        let f = format!("{field}.args.{k}");
                        if let Some(t) = compile(&f, v, Slot::Value, &["args", "value"], &mut err) {
                            args.push((k.clone(), t));
                        }
                    }
                    match JsonPath::compile(&l.select.value) {
                        Ok(select) => Some(Complete::Lookup {
                            tool: l.tool.value.clone(),
                            pos: l.tool.pos,
                            args,
                            select,
                        }),
                        Err(e) => {
                            err(
                                l.select.pos,
                                format!(
                                    "{field}.select: invalid JSONPath '{}': {e}",
                                    l.select.value
                                ),
                            );
                            None
                        }
                    }
                }
            };
            arguments.push(Arg {
                name: a.name.value.clone(),
                required: a.required,
                complete,
            });
        }
        if spec.messages.is_empty() {
            err(
                spec.name.pos,
                "messages: a prompt needs at least one message".to_owned(),
            );
        }
        let mut messages = Vec::new();
        for (i, m) in spec.messages.iter().enumerate() {
            let field = format!("messages[{i}]");
            let body = match one_of(m) {
                Ok((kind, src)) => compile(
                    &format!("{field}.{kind}"),
                    src,
                    Slot::Text,
                    &["args"],
                    &mut err,
                )
                .map(|t| match kind {
                    "text" => Body::Text(t),
                    "resource" => Body::Resource(t),
                    _ => Body::Image(t),
                }),
                Err(msg) => {
                    err(spec.name.pos, format!("{field}: {msg}"));
                    None
                }
            };
            let role = match m.role {
                RoleSpec::User => rmcp::model::Role::User,
                RoleSpec::Assistant => rmcp::model::Role::Assistant,
            };
            if let Some(body) = body {
                messages.push(Message { role, body });
            }
        }
        if diags.len() > before {
            return None;
        }
        let listing = listing(spec);
        Some(Self {
            id: id.to_owned(),
            wire: wire_name(id),
            file: file.to_path_buf(),
            listing,
            arguments,
            messages,
            templates,
        })
    }
}

/// The one field a message sets.
fn one_of(m: &MessageSpec) -> Result<(&'static str, &Located<String>), String> {
    let set: Vec<(&'static str, &Located<String>)> = [
        ("text", &m.text),
        ("resource", &m.resource),
        ("image", &m.image),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    match set.as_slice() {
        [one] => Ok(*one),
        [] => Err("set one of text, resource or image".to_owned()),
        _ => Err(format!(
            "set only one of text, resource or image (it sets {})",
            set.iter()
                .map(|(k, _)| *k)
                .collect::<Vec<_>>()
                .join(" and ")
        )),
    }
}

fn listing(spec: &PromptSpec) -> rmcp::model::Prompt {
    let args: Vec<rmcp::model::PromptArgument> = spec
        .arguments
        .iter()
        .map(|a| {
            let mut arg =
                rmcp::model::PromptArgument::new(a.name.value.clone()).with_required(a.required);
            if let Some(d) = &a.description {
                arg = arg.with_description(d.clone());
            }
            arg
        })
        .collect();
    let mut p = rmcp::model::Prompt::new(
        wire_name(&spec.name.value),
        Some(spec.description.clone()),
        (!args.is_empty()).then_some(args),
    );
    if let Some(t) = &spec.title {
        p = p.with_title(t.clone());
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compile(yaml: &str) -> Result<Prompt, String> {
        let spec: PromptSpec = serde_saphyr::from_str(yaml).unwrap();
        let mut diags = Diagnostics::default();
        Prompt::compile(Path::new("prompts.d/p.yaml"), &spec, &mut diags)
            .ok_or_else(|| diags.to_string())
    }

    #[test]
    fn a_prompt_compiles_to_its_listing() {
        let p = compile(
            r#"
name: flags.set-staging
title: Set a flag in staging
description: Set a feature flag's rollout in staging.
arguments:
  - { name: flag, required: true, complete: [checkout_v2, search_v3] }
  - { name: percent }
messages:
  - text: "Set {{ args.flag }} to {{ args.percent | default(10) }} percent in staging."
"#,
        )
        .unwrap();
        assert_eq!(p.wire, "flags_set-staging");
        let listed = serde_json::to_value(&p.listing).unwrap();
        assert_eq!(listed["arguments"][0]["name"], "flag");
        assert_eq!(listed["arguments"][0]["required"], true);
        assert_eq!(listed["title"], "Set a flag in staging");
        assert!(matches!(&p.arguments[0].complete, Some(Complete::Values(v)) if v.len() == 2));
    }

    #[test]
    fn every_problem_is_reported_with_its_place() {
        let err = compile(
            r#"
name: "bad name!"
description: d
arguments:
  - { name: a }
  - { name: a }
  - name: b
    complete_from: { tool: orders.export, select: "$[" }
messages:
  - text: "{{ args.nope }} {{ secret.X }}"
  - { text: x, resource: "y://z" }
  - {}
"#,
        )
        .unwrap_err();
        for want in [
            "name: must be 1 to 64",
            "arguments: 'a' is listed twice",
            "arguments.b.complete_from.select: invalid JSONPath '$['",
            "messages[0].text: 'args.nope' is not an argument of the prompt (it has: a, b)",
            "messages[0].text: unknown variable 'secret.X' (it can read: args)",
            "messages[1]: set only one of text, resource or image (it sets text and resource)",
            "messages[2]: set one of text, resource or image",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }
}
