//! Request-path pieces beside envelope inspection: opening a session id the first time
//! (one AEAD operation) and again (the thread's table of ids it opened), sealing one, and evaluating policies for a `tools/call` (allowed by a
//! late rule, denied by none) and filtering a `tools/list` answer. Run:
//! `cargo bench --bench request_path`.

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use mcp_gateway::mcp::session::{Owner, SessionKeys};
use mcp_gateway::security::auth::Identity;
use mcp_gateway::security::policy::{Action, Policies};
use std::sync::Arc;

const KEY: &str = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=";

fn sessions(c: &mut Criterion) {
    let (keys, _) = SessionKeys::from_config(&[KEY.to_string()]).unwrap();
    let alice = Owner {
        method: "jwt",
        rule: "users",
        subject: "alice@example.com",
        client_id: Some("agent-7"),
    };
    let owner = Some(alice);
    let upstream_id = "2c9f6a0e-5b1d-4f7e-9a63-0c1d2e3f4a5b";
    let sealed = keys.seal("files", owner, "files-1", upstream_id, 1_700_000_000);
    let mut g = c.benchmark_group("session");
    g.bench_function("open/first", |b| {
        // A fresh id each time (its nonce is random): never in the thread's table.
        b.iter_batched(
            || keys.seal("files", owner, "files-1", upstream_id, 1_700_000_000),
            |sealed| keys.open(black_box("files"), owner, &sealed).unwrap(),
            BatchSize::SmallInput,
        )
    });
    g.bench_function("open/again", |b| {
        b.iter(|| {
            keys.open(black_box("files"), owner, black_box(&sealed))
                .unwrap()
        })
    });
    g.bench_function("open/foreign_identity", |b| {
        let other = Some(Owner {
            subject: "mallory@example.com",
            ..alice
        });
        b.iter(|| assert!(keys.open("files", other, black_box(&sealed)).is_none()))
    });
    g.bench_function("seal", |b| {
        b.iter(|| {
            keys.seal(
                "files",
                owner,
                "files-1",
                black_box(upstream_id),
                1_700_000_000,
            )
        })
    });
    g.finish();
}

/// Ten rules of the shapes operators write; the caller is allowed by the ninth.
fn policies() -> Policies {
    let mut yaml = String::from(
        "upstream: {groups: {default: {servers: [{id: a, url: 'http://127.0.0.1:1/mcp'}]}}}\n\
         security:\n  policies:\n",
    );
    for i in 0..8 {
        yaml.push_str(&format!(
            "    - {{name: team{i}, effect: allow, subjects: ['team{i}-*'], tools: ['read_*', 'list_*']}}\n"
        ));
    }
    yaml.push_str(
        "    - {name: writers, effect: allow, scopes: [files.write], tools: ['write_*', 'read_*']}\n\
         \x20   - {name: no-raw, effect: deny, tools: ['*_raw']}\n",
    );
    let config = mcp_gateway::state::check::load_str(&yaml, &|_| None).unwrap();
    Policies::build(&config.security.policies).unwrap()
}

fn policy(c: &mut Criterion) {
    let p = policies();
    let who = Identity {
        method: "jwt",
        subject: "alice@example.com".into(),
        client_id: Some("agent-7".into()),
        scopes: vec!["files.read".into(), "files.write".into()],
        claims: Arc::new(serde_json::Map::new()),
        rule: "users".into(),
    };
    let mut g = c.benchmark_group("policy");
    g.bench_function("check/tools_call_allowed", |b| {
        b.iter(|| {
            let action = Action::of("/mcp", Some("tools/call"), Some(black_box("write_file")));
            p.check(Some(&who), &action).unwrap()
        })
    });
    g.bench_function("check/tools_call_denied", |b| {
        b.iter(|| {
            let action = Action::of("/mcp", Some("tools/call"), Some(black_box("delete_all")));
            assert!(p.check(Some(&who), &action).is_err())
        })
    });
    let tools: Vec<_> = (0..50)
        .map(|i| {
            let name = match i % 3 {
                0 => format!("read_{i}"),
                1 => format!("write_{i}"),
                _ => format!("admin_{i}"),
            };
            serde_json::json!({"name": name, "description": "a tool", "inputSchema": {"type": "object"}})
        })
        .collect();
    let answer = serde_json::json!({"jsonrpc": "2.0", "id": 1, "result": {"tools": tools}});
    g.bench_function("filter/tools_list_50", |b| {
        b.iter_batched(
            || answer.clone(),
            |mut a| p.filter_lists(Some(&who), "/mcp", &mut a),
            criterion::BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, sessions, policy);
criterion_main!(benches);
