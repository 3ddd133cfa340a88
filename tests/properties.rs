//! Property tests of the parsers of client and upstream bytes, on stable (the fuzz
//! targets in fuzz/ run the same parsers coverage-guided, on nightly): no input makes
//! them panic, and each refusal is the documented one.

use bytes::Bytes;
use mcp_gateway::mcp::depth::deeper_than;
use mcp_gateway::mcp::envelope::{inspect, InspectError};
use mcp_gateway::mcp::headers::{decode_value, encode_value};
use mcp_gateway::mcp::session::SessionKeys;
use mcp_gateway::proxy::list_filter::{Caller, ListFilter};
use mcp_gateway::security::policy::Policies;
use proptest::prelude::*;

fn keys() -> SessionKeys {
    SessionKeys::from_config(&["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_string()])
        .unwrap()
        .0
}

/// JSON-ish text: the characters JSON-RPC bodies are made of, so the generator reaches
/// past the first byte.
fn jsonish() -> impl Strategy<Value = String> {
    proptest::string::string_regex(r#"[\[\]{}:,"0-9a-z\\ .\-]{0,80}"#).unwrap()
}

/// Any JSON value, nested up to 16 deep, its strings full of brackets, quotes and
/// backslashes.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        r#"[\[\]{}"\\a-z ]{0,12}"#.prop_map(Value::String),
    ];
    leaf.prop_recursive(16, 200, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::btree_map("[\\[{a-z\"]{0,6}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// How deep a value nests arrays and objects (a scalar: 0).
fn depth(v: &serde_json::Value) -> usize {
    match v {
        serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// The nesting limit counts what the JSON nests, never brackets inside strings.
    #[test]
    fn the_nesting_limit_counts_nesting_only(value in json_value(), max in 1usize..18) {
        let text = serde_json::to_vec(&value).unwrap();
        prop_assert_eq!(deeper_than(&text, max), depth(&value) > max, "{}", String::from_utf8_lossy(&text));
    }

    /// Not JSON is `-32700`; JSON that is not a JSON-RPC message is `-32600`.
    #[test]
    fn the_envelope_refuses_by_the_documented_codes(body in prop_oneof![
        proptest::collection::vec(any::<u8>(), 0..200),
        jsonish().prop_map(String::into_bytes),
    ]) {
        let json = serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_ok();
        match inspect(&body) {
            Ok(_) => prop_assert!(json, "accepted what is not JSON"),
            Err(InspectError::Parse(_)) => prop_assert!(!json, "a parse error for JSON"),
            Err(InspectError::Invalid(..)) => prop_assert!(json, "-32600 for what is not JSON"),
        }
    }

    /// A message with every field in place is accepted, whatever the values.
    #[test]
    fn well_formed_requests_are_accepted(id in any::<i64>(), method in "[a-z/]{1,30}", name in ".{0,40}") {
        let body = serde_json::json!({"jsonrpc": "2.0", "id": id, "method": method,
            "params": {"name": name}}).to_string();
        prop_assert!(inspect(body.as_bytes()).is_ok());
    }

    /// Header values round-trip, `=?base64?…?=` included; any bytes decode or not,
    /// without a panic.
    #[test]
    fn header_values_round_trip(s in ".{0,60}", raw in proptest::collection::vec(any::<u8>(), 0..80)) {
        let v = encode_value(&s);
        prop_assert_eq!(decode_value(v.as_bytes()), Some(s));
        let _ = decode_value(&raw);
    }

    /// No text opens as a session but what was sealed; what was sealed opens as sealed.
    #[test]
    fn sealed_sessions_open_only_as_sealed(forged in ".{0,120}", server in "[a-z0-9]{1,20}", sid in "[ -~]{1,60}") {
        let k = keys();
        prop_assert!(k.open("default", None, &forged).is_none());
        let sealed = k.seal("default", None, &server, &sid, 1);
        let opened = k.open("default", None, &sealed).expect("opens");
        prop_assert_eq!(&*opened.server_id, server.as_str());
        prop_assert_eq!(&*opened.upstream_session, sid.as_str());
        prop_assert!(k.open("other", None, &sealed).is_none(), "bound to its group");
    }

    /// The SSE list filter gives the same bytes however the stream was cut.
    #[test]
    fn the_sse_list_filter_ignores_chunk_boundaries(cuts in proptest::collection::vec(any::<usize>(), 0..6), extra in "[ -~]{0,40}") {
        let body = format!(
            "event: message\nid: 1\ndata: {{\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{{\"x\":\"{}\"}}}}\n\nevent: message\ndata: {{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{{\"tools\":[{{\"name\":\"echo\"}},{{\"name\":\"status\"}}]}}}}\n\n",
            extra.replace(['"', '\\'], "")
        );
        let bytes = body.as_bytes();
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut from = 0;
        for a in at {
            chunks.push(&bytes[from..a]);
            from = a;
        }
        chunks.push(&bytes[from..]);
        prop_assert_eq!(filtered(&chunks), filtered(&[bytes]));
    }

    /// Any YAML-ish text is loaded or refused with at least one named problem.
    #[test]
    fn the_config_loader_names_its_problems(text in "[a-z_:{}\\[\\], \n\"'$0-9.-]{0,200}") {
        if let Err(problems) = mcp_gateway::config::load_str(&text, &|_| None) {
            prop_assert!(!problems.is_empty());
        }
    }
}

fn filtered(chunks: &[&[u8]]) -> Vec<u8> {
    let policies = Policies::build(&[]).unwrap();
    let who = Caller {
        policies: &policies,
        identity: None,
        route: "/mcp",
        transforms: None,
    };
    let mut f = ListFilter::new(Some("1"), true);
    let mut out = Vec::new();
    for (i, c) in chunks.iter().enumerate() {
        let mut body = Some(Bytes::copy_from_slice(c));
        f.chunk(&who, &mut body, i + 1 == chunks.len());
        out.extend_from_slice(body.as_deref().unwrap_or_default());
    }
    out
}
