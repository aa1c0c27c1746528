//! The templates of a tool file and the variables they read: each compiled, and each
//! variable checked against what this kind of template can read (the declared
//! arguments, `secret.NAME`, ...). A shell-style `${NAME}` is pointed out, never sent.
//!
//! Owns [`VariableError`]; compiling the rest of the tool is `compile.rs`'s.

use std::collections::BTreeSet;

use super::compile::ToolCompiler;
use crate::config::Located;
use crate::template::{Slot, Tpl};

/// A variable a template reads that the tool cannot give it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum VariableError {
    /// A root this kind of template does not have.
    #[error("unknown variable '{var}' (templates here can read: {roots})")]
    UnknownRoot { var: String, roots: String },
    /// `args.NAME` for an argument the input schema does not declare.
    #[error(
        "unknown variable '{var}': the input schema declares no argument '{arg}' (it declares: {declared})"
    )]
    UndeclaredArgument {
        var: String,
        arg: String,
        declared: String,
    },
    /// `secret` without a name.
    #[error("name the secret: 'secret.NAME' reads environment variable NAME")]
    UnnamedSecret,
}

/// The name in the first `${NAME}` (or `${NAME:-default}`) of a template: tool files are
/// not expanded like `mcpd.yaml`, so such text is a mistake to point out, not to send.
fn shell_variable(text: &str) -> Option<&str> {
    text.match_indices("${").find_map(|(i, _)| {
        let inner = text.get(i + 2..)?;
        let end = inner.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))?;
        let name = inner.get(..end)?;
        let closed = inner
            .get(end..)
            .is_some_and(|r| r.starts_with('}') || r.starts_with(":-"));
        (!name.is_empty() && !name.starts_with(|c: char| c.is_ascii_digit()) && closed)
            .then_some(name)
    })
}

impl ToolCompiler<'_> {
    /// Compiles a template and checks the variables it reads.
    pub(super) fn template(
        &mut self,
        field: &str,
        src: &Located<String>,
        slot: Slot,
        args: &BTreeSet<String>,
        roots: &[&str],
    ) -> Option<Tpl> {
        if let Some(var) = shell_variable(&src.value) {
            self.err(
                src.pos,
                field,
                format!(
                    "'${{{var}}}' is not expanded in tool files: read environment variable {var} with '{{{{ secret.{var} }}}}' (for a literal '${{', write {{{{ '${{' }}}})"
                ),
            );
            return None;
        }
        let name = format!("{}/{field}", self.id);
        match self.templates.add(&name, &src.value, slot) {
            Ok((tpl, vars)) => {
                if ["request.path", "request.query.", "request.body"]
                    .iter()
                    .any(|p| field.starts_with(p))
                {
                    self.request_reads.extend(vars.iter().cloned());
                }
                let mut ok = true;
                for var in vars {
                    if let Err(e) = self.check_var(&var, args, roots) {
                        self.err(src.pos, field, e);
                        ok = false;
                    }
                }
                ok.then_some(tpl)
            }
            Err(e) => {
                self.err(src.pos, field, format!("template error: {e}"));
                None
            }
        }
    }

    fn check_var(
        &mut self,
        var: &str,
        args: &BTreeSet<String>,
        roots: &[&str],
    ) -> Result<(), VariableError> {
        let mut parts = var.split('.');
        let root = parts.next().unwrap_or_default();
        let field = parts.next();
        if !roots.contains(&root) {
            return Err(VariableError::UnknownRoot {
                var: var.to_owned(),
                roots: roots.join(", "),
            });
        }
        match (root, field) {
            ("args", Some(f)) if !args.contains(f) => Err(VariableError::UndeclaredArgument {
                var: var.to_owned(),
                arg: f.to_owned(),
                declared: args.iter().cloned().collect::<Vec<_>>().join(", "),
            }),
            ("secret", None) => Err(VariableError::UnnamedSecret),
            ("secret", Some(name)) => {
                self.secrets.insert(name.to_owned());
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::shell_variable;

    #[test]
    fn shell_variables_in_templates_are_found_and_literals_are_not() {
        assert_eq!(shell_variable("Bearer ${API_TOKEN}"), Some("API_TOKEN"));
        assert_eq!(shell_variable("${HOST:-x}/a"), Some("HOST"));
        assert_eq!(shell_variable("a {{ '${' }} b"), None);
        assert_eq!(shell_variable("price: $5, {x}"), None);
        assert_eq!(shell_variable("${1}"), None);
    }
}
