//! `mcpd test`: runs the declared golden and adversarial cases of `tests.d/` through the
//! real pipeline (`Engine::call`) and judges each against its expectations.
//!
//! Owns loading case files, standing up the upstream the cases ask for (the bundled demo
//! API or a stub of recorded responses), pointing the config's upstreams at it, and the
//! verdicts. It must not print: the CLI renders the report.

pub(crate) mod case;
mod check;
pub(crate) mod coverage;
pub(crate) mod stub;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::catalog::Catalog;
use crate::config::diag::Diagnostics;
use crate::config::{self, Located, Vars};
use crate::engine::{CallContext, Engine};
use crate::identity::{Actor, Source};

pub(crate) use case::{CaseFile, UpstreamMode};

/// The directory of case files in a config directory.
pub(crate) const TESTS_DIR: &str = "tests.d";

/// The verdict on one case.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// Every expectation held.
    Pass,
    /// These expectations did not hold (each says what was expected and what came).
    Fail(Vec<String>),
}

/// One case's outcome.
#[derive(Debug, Clone)]
pub(crate) struct CaseReport {
    /// The case file, as given.
    pub file: PathBuf,
    /// The case's name.
    pub name: String,
    /// Pass or fail.
    pub verdict: Verdict,
    /// Time the case took.
    pub elapsed: Duration,
    /// How each policy rule came out for the case's call (file order), when the call
    /// reached policy; for `--coverage`.
    pub rules: Option<Vec<crate::policy::RuleOutcome>>,
}

/// Why a run could not start. The CLI prints it with its causes (`{:#}`), so a
/// message does not repeat its source.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RunError {
    /// The config directory does not load or compile.
    #[error("invalid configuration in '{0}' (run 'mcpd validate'):\n{1}")]
    Config(PathBuf, Diagnostics),
    /// No case files where they were looked for.
    #[error("no test cases in '{0}': add YAML files with a 'cases:' list (see docs/testing.md)")]
    NoCases(PathBuf),
    /// The case directory cannot be read.
    #[error("cannot read '{0}'")]
    Read(PathBuf, #[source] std::io::Error),
    /// The upstream for the cases cannot be started.
    #[error("cannot start the test upstream")]
    Upstream(#[source] std::io::Error),
    /// No throwaway signing key could be made.
    #[error("cannot make a signing key for the run")]
    Key(#[source] BoxError),
}

/// Why one case file or one case fails before its call is judged. It is reported as a
/// failed case, not a failed run: unlike [`RunError`], the other cases still run. A
/// message includes its cause: the report prints it as is (`{}`), not with its sources.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CaseError {
    /// The case file cannot be read.
    #[error("{}: cannot read file: {source}", .path.display())]
    Read {
        /// The case file.
        path: PathBuf,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The case file is not a valid case file.
    #[error("{}:{} {}", .path.display(), position(.source), parse_message(.source))]
    Parse {
        /// The case file.
        path: PathBuf,
        /// The parser's error.
        source: Box<serde_saphyr::Error>,
    },
    /// A case asks for elevation, and the config cannot sign grants.
    #[error("mcpd.yaml has no 'identity:' section, and grants are signed with the identity key")]
    NoIdentity,
    /// A case asks for elevation on a tool the config does not declare.
    #[error("unknown tool '{0}'")]
    UnknownTool(String),
    /// The elevation grant could not be recorded.
    #[error(transparent)]
    Grant(BoxError),
}

/// An error from another area whose type the run does not look into, only reports.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `line:col:` of a parse error, or nothing when it has no place.
fn position(e: &serde_saphyr::Error) -> String {
    e.location()
        .map(|l| format!("{}:{}:", l.line(), l.column()))
        .unwrap_or_default()
}

/// A parse error's message as a YAML author reads it (the position is already in front).
fn parse_message(e: &serde_saphyr::Error) -> String {
    config::yaml::message(e)
}

/// The case files at `path`: the file itself, or the YAML files of a directory, sorted.
///
/// # Errors
/// When the path cannot be read or holds no case file.
pub(crate) fn case_paths(path: &Path) -> Result<Vec<PathBuf>, RunError> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    if !path.exists() {
        return Err(RunError::NoCases(path.to_path_buf()));
    }
    let paths = config::tool_paths(path).map_err(|e| RunError::Read(path.to_path_buf(), e))?;
    if paths.is_empty() {
        return Err(RunError::NoCases(path.to_path_buf()));
    }
    Ok(paths)
}

/// Runs every case of every file in `cases` against the config in `dir`.
///
/// A case file that does not parse counts as one failed case, so a broken file can
/// never pass silently.
///
/// # Errors
/// When the config does not compile or an upstream cannot be started.
pub(crate) async fn run(dir: &Path, cases: &[PathBuf]) -> Result<Vec<CaseReport>, RunError> {
    let (loaded, diags) = config::load_dir(dir);
    if !diags.is_empty() {
        return Err(RunError::Config(dir.to_path_buf(), diags));
    }
    let mut reports = Vec::new();
    for path in cases {
        let started = Instant::now();
        let file = match load_case_file(path) {
            Ok(f) => f,
            Err(e) => {
                reports.push(CaseReport {
                    file: path.clone(),
                    name: "(case file)".to_owned(),
                    verdict: Verdict::Fail(vec![e.to_string()]),
                    elapsed: started.elapsed(),
                    rules: None,
                });
                continue;
            }
        };
        reports.extend(run_file(dir, &loaded, path, &file).await?);
    }
    Ok(reports)
}

fn load_case_file(path: &Path) -> Result<CaseFile, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    serde_saphyr::from_str::<CaseFile>(&text).map_err(|e| CaseError::Parse {
        path: path.to_path_buf(),
        source: Box::new(e),
    })
}

/// Where one file's upstream requests go.
enum Upstream {
    Demo(Arc<crate::demo_api::DemoState>),
    Stub(stub::Stub),
}

impl Upstream {
    fn requests(&self) -> usize {
        match self {
            Upstream::Demo(state) => state.requests_seen(),
            Upstream::Stub(stub) => stub.requests().len(),
        }
    }
}

async fn run_file(
    dir: &Path,
    loaded: &config::Loaded,
    path: &Path,
    file: &CaseFile,
) -> Result<Vec<CaseReport>, RunError> {
    let (url, upstream) = match file.upstream {
        UpstreamMode::Demo => {
            let (addr, state) =
                crate::demo_api::spawn(std::net::SocketAddr::from(([127, 0, 0, 1], 0)))
                    .await
                    .map_err(RunError::Upstream)?;
            (format!("http://{addr}"), Upstream::Demo(state))
        }
        UpstreamMode::Recorded => {
            let stub = stub::Stub::start().await.map_err(RunError::Upstream)?;
            (stub.url.clone(), Upstream::Stub(stub))
        }
    };
    // No real secret is read or sent: templates see placeholders.
    let vars = with_throwaway_key(loaded, Vars::from_env().with_placeholder_secrets())?;
    let (pointed, routes) = pointed_at(loaded, &url, matches!(upstream, Upstream::Stub(_)));
    if let Upstream::Stub(stub) = &upstream {
        stub.set_routes(routes);
    }
    let catalog =
        Catalog::compile(&pointed, &vars).map_err(|d| RunError::Config(dir.to_path_buf(), d))?;
    // Each file starts from nothing: its state lives in memory for the run.
    let engine = Engine::new(catalog, Arc::new(crate::store::MemoryStore::new()));
    let mut reports = Vec::new();
    for case in &file.cases {
        let started = Instant::now();
        let (verdict, rules) = run_case(&engine, &upstream, file.upstream, case).await;
        reports.push(CaseReport {
            file: path.to_path_buf(),
            name: case.name.clone(),
            verdict,
            elapsed: started.elapsed(),
            rules,
        });
    }
    Ok(reports)
}

/// Elevation grants are signed with the identity key; the run signs (and so verifies)
/// with a throwaway one, so no real key is needed and none is used.
fn with_throwaway_key(loaded: &config::Loaded, vars: Vars) -> Result<Vars, RunError> {
    let Some(identity) = &loaded.server.1.identity else {
        return Ok(vars);
    };
    let env = identity
        .signing_key_env
        .clone()
        .unwrap_or_else(|| crate::identity::DEFAULT_KEY_ENV.to_owned());
    let (key, _) = crate::identity::keygen("mcpd-test").map_err(|e| RunError::Key(e.into()))?;
    Ok(vars.with(&env, &key))
}

/// The loaded config with every upstream (and region) pointed at `url`, keeping each
/// base URL's path (`https://api.internal/v1` becomes `<url>/v1`), and loopback
/// allowed by egress: the cases never reach a real backend. With `routed`, each base
/// URL gets its own prefix (`<url>/_mcpd/N/v1`, route `N` of the list returned) so the
/// stub can tell which upstream and region a request was sent to.
fn pointed_at(
    loaded: &config::Loaded,
    url: &str,
    routed: bool,
) -> (config::Loaded, Vec<stub::Route>) {
    let mut routes = Vec::new();
    let mut moved = |upstream: &str, region: Option<&str>, original: &str| {
        let parsed = reqwest::Url::parse(original).ok();
        let path = parsed
            .as_ref()
            .map(|u| u.path().trim_end_matches('/').to_owned())
            .unwrap_or_default();
        let prefix = if routed {
            stub::route_prefix(routes.len())
        } else {
            String::new()
        };
        routes.push(stub::Route {
            upstream: upstream.to_owned(),
            region: region.map(str::to_owned),
            origin: parsed
                .map_or_else(|| original.to_owned(), |u| u.origin().ascii_serialization()),
        });
        Located::unplaced(format!("{url}{prefix}{path}"))
    };
    let mut loaded = loaded.clone();
    for (name, up) in &mut loaded.server.1.upstreams {
        up.url = moved(name, None, &up.url.value);
        for (region, u) in &mut up.regions {
            *u = moved(name, Some(region), &u.value);
        }
    }
    loaded
        .policy
        .1
        .egress
        .push(Located::unplaced("127.0.0.1".to_owned()));
    (loaded, routes)
}

async fn run_case(
    engine: &Engine,
    upstream: &Upstream,
    mode: UpstreamMode,
    case: &case::Case,
) -> (Verdict, Option<Vec<crate::policy::RuleOutcome>>) {
    if let Err(problems) = check::well_formed(case, mode) {
        return (Verdict::Fail(problems), None);
    }
    let grant = match &case.call.elevation {
        Some(spec) => match elevate(engine, case, spec).await {
            Ok(g) => Some(g),
            Err(e) => return (Verdict::Fail(vec![format!("elevation: {e}")]), None),
        },
        None => None,
    };
    if let Upstream::Stub(stub) = upstream {
        stub.load(&case.recorded);
    }
    let before = upstream.requests();
    let ctx = CallContext {
        actor: case
            .call
            .actor
            .as_ref()
            .map(|a| Arc::new(Actor::declared(a, Source::TestCase))),
        ..CallContext::default()
    };
    let result = match engine
        .call(&case.call.tool, Some(case.call.args.clone()), &ctx)
        .await
    {
        Ok(r) => r,
        Err(e) => {
            let why =
                format!("{e}: the config declares no such tool (ids and wire names both work)");
            return (Verdict::Fail(vec![why]), None);
        }
    };
    let rules = coverage::outcomes(&engine.catalog(), &case.call.args, &result);
    let seen = check::Seen {
        requests: upstream.requests().saturating_sub(before),
        unanswered: match upstream {
            Upstream::Stub(stub) => stub.unanswered(),
            Upstream::Demo(_) => 0,
        },
        targets: match upstream {
            Upstream::Stub(stub) => Some(stub.requests()),
            Upstream::Demo(_) => None,
        },
    };
    let mut problems = check::judge(&case.expect, &result, &seen);
    if let Some(g) = grant {
        let catalog = engine.catalog();
        if let Some(identity) = &catalog.identity
            && let Err(e) =
                crate::identity::elevation::revoke(engine.store().as_ref(), identity, &g).await
        {
            problems.push(format!(
                "elevation: cannot remove the grant after the call: {e}"
            ));
        }
    }
    let verdict = if problems.is_empty() {
        Verdict::Pass
    } else {
        Verdict::Fail(problems)
    };
    (verdict, rules)
}

/// Records the case's grant for its actor and tool; returns the grant's id.
async fn elevate(
    engine: &Engine,
    case: &case::Case,
    spec: &case::GrantSpec,
) -> Result<String, CaseError> {
    let catalog = engine.catalog();
    let identity = catalog.identity.as_ref().ok_or(CaseError::NoIdentity)?;
    let tool = catalog
        .get(&case.call.tool)
        .ok_or_else(|| CaseError::UnknownTool(case.call.tool.clone()))?;
    let subject = case
        .call
        .actor
        .as_ref()
        .map_or_else(|| catalog.default_subject(), |a| a.subject.as_str())
        .to_owned();
    let grant = crate::identity::elevation::grant(
        engine.store().as_ref(),
        identity,
        &catalog.elevation,
        &crate::identity::elevation::GrantRequest {
            subject,
            tool: tool.id.clone(),
            env: spec.env.clone(),
            ticket: spec.ticket.clone(),
            granted_by: spec
                .granted_by
                .clone()
                .unwrap_or_else(|| "mcpd-test".to_owned()),
            ttl: Duration::from_secs(60),
        },
    )
    .await
    .map_err(|e| CaseError::Grant(e.into()))?;
    Ok(grant.jti)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error and its causes, as the CLI prints them (`{:#}`).
    fn with_causes(e: &dyn std::error::Error) -> String {
        let mut out = e.to_string();
        let mut cause = e.source();
        while let Some(c) = cause {
            out.push_str(": ");
            out.push_str(&c.to_string());
            cause = c.source();
        }
        out
    }

    #[test]
    fn run_errors_print_their_cause_once() {
        let read = RunError::Read(PathBuf::from("cases"), std::io::Error::other("denied"));
        assert_eq!(with_causes(&read), "cannot read 'cases': denied");
        let upstream = RunError::Upstream(std::io::Error::other("no port"));
        assert_eq!(
            with_causes(&upstream),
            "cannot start the test upstream: no port"
        );
        let key = RunError::Key("no entropy".into());
        assert_eq!(
            with_causes(&key),
            "cannot make a signing key for the run: no entropy"
        );
    }

    #[test]
    fn a_case_file_that_does_not_load_names_the_file_and_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let typo = dir.path().join("typo.yaml");
        std::fs::write(
            &typo,
            "cases:\n  - name: typo\n    call: { tool: flag.set }\n    expect: { decison: deny }\n",
        )
        .unwrap();
        let err = load_case_file(&typo).unwrap_err();
        assert!(matches!(err, CaseError::Parse { .. }), "{err:?}");
        let msg = err.to_string();
        assert!(msg.starts_with(&format!("{}:4:", typo.display())), "{msg}");
        assert!(msg.contains("unknown field `decison`"), "{msg}");
        assert!(!msg.contains(" at line "), "{msg}");

        let missing = dir.path().join("missing.yaml");
        let io = std::fs::read_to_string(&missing).unwrap_err();
        assert_eq!(
            load_case_file(&missing).unwrap_err().to_string(),
            format!("{}: cannot read file: {io}", missing.display())
        );
    }

    #[test]
    fn elevation_errors_say_what_is_missing() {
        assert_eq!(
            CaseError::NoIdentity.to_string(),
            "mcpd.yaml has no 'identity:' section, and grants are signed with the identity key"
        );
        assert_eq!(
            CaseError::UnknownTool("nope.tool".to_owned()).to_string(),
            "unknown tool 'nope.tool'"
        );
        assert_eq!(
            CaseError::Grant("the store is down".into()).to_string(),
            "the store is down"
        );
    }
}
