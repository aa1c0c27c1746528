//! `mcpd import openapi`: the Petstore 3 spec becomes tool files that pass `mcpd validate`
//! and whose tools, called with `mcpd call`, reach a stub of the Petstore API.

use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};

use axum::extract::{Path as UrlPath, Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::util::{bin, repo, run, validate};

type Seen = Arc<Mutex<Vec<String>>>;

/// A Petstore stub on a free loopback port, serving under /v1 like the spec's server.
fn petstore_stub() -> (String, Seen) {
    let seen: Seen = Arc::default();
    let app = Router::new()
        .route(
            "/v1/pets",
            get(
                |State(s): State<Seen>, Query(q): Query<Vec<(String, String)>>| async move {
                    s.lock().unwrap().push(format!("GET /v1/pets {q:?}"));
                    let limit = q
                        .iter()
                        .find(|(k, _)| k == "limit")
                        .map_or(3, |(_, v)| v.parse().unwrap());
                    let pets: Vec<Value> = [(1, "rex"), (2, "tom"), (3, "kiki")]
                        .iter()
                        .take(limit)
                        .map(|(id, name)| json!({"id": id, "name": name}))
                        .collect();
                    Json(json!(pets))
                },
            )
            .post(
                |State(s): State<Seen>, Json(body): Json<Value>| async move {
                    s.lock().unwrap().push(format!("POST /v1/pets {body}"));
                    (axum::http::StatusCode::CREATED, Json(body))
                },
            ),
        )
        .route(
            "/v1/pets/{id}",
            get(
                |State(s): State<Seen>, UrlPath(id): UrlPath<String>| async move {
                    s.lock().unwrap().push(format!("GET /v1/pets/{id}"));
                    Json(json!({"id": 7, "name": id, "tag": "dog"}))
                },
            ),
        )
        .with_state(seen.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (format!("http://{addr}"), seen)
}

/// A config dir with only the petstore upstream (URL from PETSTORE_URL) and no tools.
fn empty_config() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mcpd.yaml"),
        "upstreams:\n  petstore:\n    url: \"${PETSTORE_URL:-http://petstore.swagger.io/v1}\"\ndefault_actor: { subject: \"user:test\", scopes: [\"*\"] }\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("policies.yaml"),
        "default: allow\negress: [127.0.0.1, petstore.swagger.io]\nrules:\n  - id: redact-pii\n    effect: redact\n    detectors: [email, pan, secret]\n",
    )
    .unwrap();
    dir
}

fn mcpd(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    run(Command::new(bin())
        .arg("--config")
        .arg(dir)
        .args(args)
        .envs(env.iter().copied()))
}

/// `mcpd import openapi PETSTORE --upstream petstore EXTRA` into `dir`.
fn import_petstore(dir: &Path, extra: &[&str]) -> (i32, String, String) {
    let spec = petstore_spec();
    let mut args = vec!["import", "openapi", &spec, "--upstream", "petstore"];
    args.extend_from_slice(extra);
    mcpd(dir, &args, &[])
}

fn petstore_spec() -> String {
    repo()
        .join("tests/fixtures/petstore.yaml")
        .to_str()
        .unwrap()
        .to_owned()
}

#[test]
fn petstore_imports_validates_and_its_tools_call_the_api() {
    let cfg = empty_config();
    let (code, out, err) = import_petstore(cfg.path(), &[]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 tools imported for upstream 'petstore'"),
        "{out}"
    );
    for id in [
        "petstore.list_pets",
        "petstore.create_pets",
        "petstore.show_pet_by_id",
    ] {
        assert!(
            cfg.path().join(format!("tools.d/{id}.yaml")).is_file(),
            "{id}: {out}"
        );
    }
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("ok: 3 tools"), "{out}");

    let (url, seen) = petstore_stub();
    let env = [("PETSTORE_URL", format!("{url}/v1"))];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();

    let (code, out, err) = mcpd(
        cfg.path(),
        &["call", "petstore.list_pets", "--args", r#"{"limit": 2}"#],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        result["structuredContent"],
        json!({"result": [{"id": 1, "name": "rex"}, {"id": 2, "name": "tom"}]})
    );

    // Path parameters go through the path encoding: one segment, slash escaped.
    let (code, out, err) = mcpd(
        cfg.path(),
        &[
            "call",
            "petstore_show_pet_by_id",
            "--args",
            r#"{"petId": "a/b"}"#,
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");
    let result: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(result["structuredContent"]["name"], "a/b");

    let (code, out, err) = mcpd(
        cfg.path(),
        &[
            "call",
            "petstore.create_pets",
            "--args",
            r#"{"body": {"id": 9, "name": "nemo"}}"#,
        ],
        &env,
    );
    assert_eq!(code, 0, "{out}{err}");

    // The input schema came from the spec: a missing required body field is refused.
    let (code, out, _) = mcpd(
        cfg.path(),
        &[
            "call",
            "petstore.create_pets",
            "--args",
            r#"{"body": {"id": 9}}"#,
        ],
        &env,
    );
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("invalid arguments") && out.contains("name"),
        "{out}"
    );

    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        [
            r#"GET /v1/pets [("limit", "2")]"#,
            "GET /v1/pets/a/b",
            r#"POST /v1/pets {"id":9,"name":"nemo"}"#,
        ]
    );
}

#[test]
fn generated_files_carry_annotations_idempotency_and_optional_query_handling() {
    let cfg = empty_config();
    let (code, _, err) = import_petstore(cfg.path(), &[]);
    assert_eq!(code, 0, "{err}");
    let read = |id: &str| -> Value {
        serde_saphyr::from_str(
            &std::fs::read_to_string(cfg.path().join(format!("tools.d/{id}.yaml"))).unwrap(),
        )
        .unwrap()
    };
    let list = read("petstore.list_pets");
    assert_eq!(list["annotations"]["readOnlyHint"], true);
    assert_eq!(
        list["request"]["query"]["limit"],
        "{{ args.limit | default('') }}"
    );
    assert_eq!(list["input"]["properties"]["limit"]["maximum"], 100);
    assert!(list.get("idempotency").is_none());
    let create = read("petstore.create_pets");
    assert_eq!(create["annotations"]["readOnlyHint"], false);
    assert_eq!(create["request"]["method"], "POST");
    assert_eq!(create["request"]["body"], "{{ args.body }}");
    assert_eq!(create["input"]["required"], json!(["body"]));
    assert_eq!(
        create["input"]["properties"]["body"]["required"],
        json!(["id", "name"])
    );
    assert!(
        create["idempotency"]["key"]
            .as_str()
            .unwrap()
            .contains("{{ args | tojson }}")
    );

    // A second import refuses to overwrite; --tag with no match says so.
    let (code, _, err) = import_petstore(cfg.path(), &[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("exist already (nothing was written; --force overwrites them)"),
        "{err}"
    );
    let (code, _, err) = import_petstore(cfg.path(), &["--tag", "cats"]);
    assert_eq!(code, 2);
    assert!(err.contains("no operation is tagged cats"), "{err}");
}

const SPEC_31: &str = r#"{
  "openapi": "3.1.0",
  "info": {"title": "Flags Admin", "version": "1"},
  "servers": [{"url": "https://flags.example.internal/api"}],
  "security": [{"bearer": []}],
  "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
  "paths": {
    "/flags/{flag-name}": {
      "parameters": [{"name": "flag-name", "in": "path", "required": true, "schema": {"type": "string"}}],
      "put": {
        "operationId": "setFlag",
        "tags": ["flags"],
        "requestBody": {"required": true, "content": {"application/json": {"schema": {
          "type": "object", "required": ["percent"],
          "properties": {"percent": {"type": "integer", "minimum": 0, "maximum": 100}, "note": {"type": ["string", "null"]}}
        }}}},
        "responses": {"200": {"description": "ok"}}
      },
      "delete": {"operationId": "deleteFlag", "tags": ["flags"], "responses": {"204": {"description": "gone"}}}
    },
    "/flags": {
      "get": {
        "operationId": "listFlags", "tags": ["flags"],
        "parameters": [{"name": "env", "in": "query", "schema": {"type": "array", "items": {"type": "string"}}},
                       {"name": "X-Trace", "in": "header", "schema": {"type": "string"}}],
        "responses": {"200": {"description": "ok", "content": {"application/json": {"schema": {
          "type": "object", "properties": {"flags": {"type": "array", "items": {"type": "object"}}, "next": {"type": "string"}}
        }}}}}
      }
    },
    "/upload": {"post": {"operationId": "upload", "requestBody": {"content": {"multipart/form-data": {"schema": {"type": "object"}}}}, "responses": {"200": {"description": "ok"}}}}
  }
}"#;

#[test]
fn openapi_31_json_with_security_and_odd_names_imports_and_validates() {
    let cfg = empty_config();
    std::fs::write(
        cfg.path().join("mcpd.yaml"),
        "upstreams:\n  flags-admin:\n    url: \"http://127.0.0.1:9/api\"\n",
    )
    .unwrap();
    let spec = cfg.path().join("flags.json");
    std::fs::write(&spec, SPEC_31).unwrap();
    let (code, out, err) = mcpd(
        cfg.path(),
        &["import", "openapi", spec.to_str().unwrap()],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("3 tools imported for upstream 'flags_admin'"),
        "{out}"
    );
    assert!(
        err.contains("POST /upload: the request body is not JSON"),
        "{err}"
    );
    assert!(err.contains("header parameter 'X-Trace' left out"), "{err}");
    // The upstream is not declared under the spec's name: the command says how to.
    assert!(
        out.contains(
            "flags_admin:\n      url: \"${FLAGS_ADMIN_URL:-https://flags.example.internal/api}\""
        ),
        "{out}"
    );

    std::fs::remove_dir_all(cfg.path().join("tools.d")).unwrap();
    let (code, out, err) = mcpd(
        cfg.path(),
        &[
            "import",
            "openapi",
            spec.to_str().unwrap(),
            "--upstream",
            "flags-admin",
            "--tag",
            "flags",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = validate(cfg.path());
    assert_eq!(code, 0, "{out}{err}");
    let set: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(cfg.path().join("tools.d/flags-admin.set_flag.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(set["request"]["path"], "/flags/{{ args.flag_name }}");
    assert_eq!(
        set["request"]["headers"]["Authorization"],
        "Bearer {{ secret.FLAGS_ADMIN_TOKEN }}"
    );
    assert_eq!(set["annotations"]["idempotentHint"], true);
    let list: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(cfg.path().join("tools.d/flags-admin.list_flags.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(list["response"]["select"], "$.flags");
    assert_eq!(
        list["request"]["query"]["env"],
        "{{ args.env | default([]) | join(',') }}"
    );
    let del: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(cfg.path().join("tools.d/flags-admin.delete_flag.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(del["annotations"]["destructiveHint"], true);
}
