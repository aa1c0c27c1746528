use std::net::{Ipv4Addr, SocketAddr};
use std::time::SystemTime;

use super::*;
use crate::config::server::TicketCheckSpec;

fn spec(url: &str, cache: &str) -> TicketCheckSpec {
    let yaml = format!(
        "url: \"{url}/tickets/{{{{ ticket }}}}\"\n\
         headers: {{ Authorization: \"Bearer {{{{ secret.T_TICKETS }}}}\" }}\n\
         require: {{ \"$.status\": approved }}\n\
         environment: \"$.environment\"\n\
         window: {{ start: \"$.window.start\", end: \"$.window.end\" }}\n\
         cache: {cache}\n"
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

async fn demo() -> (String, Arc<crate::demo_api::DemoState>) {
    let (addr, state) = crate::demo_api::spawn(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
        .await
        .unwrap();
    (format!("http://{addr}"), state)
}

fn compile(spec: &TicketCheckSpec, clock: &Clock) -> TicketCheck {
    let vars = Vars::default().with("T_TICKETS", crate::demo_api::TICKETS_TOKEN);
    let mut diags = Diagnostics::default();
    let check = TicketCheck::compile(Path::new("mcpd.yaml"), spec, &vars, &mut diags);
    assert!(diags.is_empty(), "{diags}");
    check.unwrap().with_clock(clock.clone())
}

use std::sync::Arc;

#[tokio::test]
async fn a_ticket_that_passed_is_reused_for_the_cache_time_then_asked_again() {
    let (url, api) = demo().await;
    let clock = Clock::manual(SystemTime::now());
    let check = compile(&spec(&url, "30s"), &clock);
    let ok = check.check("CHG-1234", Some("prod")).await.unwrap();
    assert!(ok.window_end.is_some());
    check.check("CHG-1234", Some("prod")).await.unwrap();
    assert_eq!(api.requests_seen(), 1, "the second check used the cache");
    clock.advance(Duration::from_secs(31));
    check.check("CHG-1234", Some("prod")).await.unwrap();
    assert_eq!(api.requests_seen(), 2);
    // Refusals are not cached: an approval made meanwhile is seen at once.
    for _ in 0..2 {
        let e = check.check("CHG-1300", Some("prod")).await.unwrap_err();
        assert!(matches!(e, TicketRefused::Condition { .. }), "{e}");
    }
    assert_eq!(api.requests_seen(), 4);
}

#[tokio::test]
async fn a_cached_tickets_window_is_checked_again_on_every_use() {
    let (url, api) = demo().await;
    let clock = Clock::manual(SystemTime::now());
    let check = compile(&spec(&url, "24h"), &clock);
    check.check("CHG-1234", Some("prod")).await.unwrap();
    // Its window closes 8 hours after it was read.
    clock.advance(Duration::from_secs(9 * 3600));
    let e = check.check("CHG-1234", Some("prod")).await.unwrap_err();
    assert!(
        e.to_string()
            .starts_with("ticket 'CHG-1234''s change window closed at"),
        "{e}"
    );
    assert_eq!(api.requests_seen(), 1);
}

#[test]
fn a_bad_jsonpath_template_or_duration_is_reported_at_compile() {
    let mut s = spec("http://127.0.0.1:9", "soon");
    s.require.insert("$[".to_owned(), serde_json::json!("x"));
    s.headers
        .insert("X-Who".to_owned(), "{{ args.who }}".to_owned());
    let mut diags = Diagnostics::default();
    let check = TicketCheck::compile(Path::new("mcpd.yaml"), &s, &Vars::default(), &mut diags);
    assert!(check.is_none());
    let text = diags.to_string();
    assert!(text.contains("elevation.ticket_check.require:"), "{text}");
    assert!(text.contains("unknown variable 'args.who'"), "{text}");
    assert!(text.contains("elevation.ticket_check.cache:"), "{text}");
}
