use super::*;

fn one(body: &str) -> Envelope {
    match inspect(body.as_bytes()).unwrap() {
        Body::Single(e) => e,
        Body::Batch(_) => panic!("batch"),
    }
}

#[test]
fn request_with_name_and_modern_version() {
    let e = one(
        r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"search","arguments":{"q":[1,2,{"x":"y"}]},"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","other":1}}}"#,
    );
    assert_eq!(e.kind, Kind::Request);
    assert_eq!(e.id.as_ref().unwrap().get(), "7");
    assert_eq!(e.method.as_deref(), Some("tools/call"));
    assert!(
        matches!(e.method, Some(Cow::Borrowed(_))),
        "known methods are interned"
    );
    assert_eq!(e.name.as_deref(), Some("search"));
    assert_eq!(e.era(), Era::Modern);
}

#[test]
fn uri_is_the_name_of_resources_read() {
    let e =
        one(r#"{"jsonrpc":"2.0","id":"a","method":"resources/read","params":{"uri":"file:///x"}}"#);
    assert_eq!(e.name.as_deref(), Some("file:///x"));
    assert_eq!(e.era(), Era::Legacy);
}

#[test]
fn eras() {
    let init = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#,
    );
    assert_eq!(init.era(), Era::Legacy);
    let old = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2025-11-25"}}}"#,
    );
    assert_eq!(old.era(), Era::Legacy);
    let none = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#);
    assert_eq!(none.era(), Era::Legacy);
    let newer = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"2027-01-01"}}}"#,
    );
    assert_eq!(newer.era(), Era::Modern);
}

#[test]
fn notifications_and_responses() {
    let n = one(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    assert_eq!(n.kind, Kind::Notification);
    let r = one(r#"{"jsonrpc":"2.0","id":3,"result":{"roots":[]}}"#);
    assert_eq!(r.kind, Kind::Response);
    let r = one(r#"{"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"x"}}"#);
    assert_eq!(r.kind, Kind::Response);
    let unknown = one(r#"{"jsonrpc":"2.0","id":1,"method":"vendor/thing","params":[1,2]}"#);
    assert_eq!(unknown.method.as_deref(), Some("vendor/thing"));
}

#[test]
fn the_error_table() {
    let parse = ["", "   ", "{", "{\"jsonrpc\":", "nope", "[1,"];
    for b in parse {
        assert!(
            matches!(inspect(b.as_bytes()), Err(InspectError::Parse(_))),
            "{b:?}"
        );
    }
    let invalid = [
        r#"{"id":1,"method":"x"}"#,
        r#"{"jsonrpc":"1.0","id":1,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1}"#,
        r#"{"jsonrpc":"2.0","id":null,"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
        r#"42"#,
        r#""text""#,
        r#"[]"#,
        r#"[1]"#,
    ];
    for b in invalid {
        assert!(
            matches!(inspect(b.as_bytes()), Err(InspectError::Invalid(..))),
            "{b:?}"
        );
    }
}

#[test]
fn invalid_keeps_a_readable_id() {
    match inspect(br#"{"jsonrpc":"1.0","id":"abc","method":"x"}"#) {
        Err(InspectError::Invalid(_, Some(id))) => assert_eq!(id.get(), "\"abc\""),
        other => panic!("{other:?}"),
    }
}

#[test]
fn batches() {
    match inspect(br#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},{"jsonrpc":"2.0","method":"notifications/initialized"}]"#).unwrap() {
        Body::Batch(items) => {
            assert_eq!(items.len(), 2);
            assert_eq!(items[1].kind, Kind::Notification);
        }
        Body::Single(_) => panic!("single"),
    }
}

#[test]
fn non_string_name_is_ignored_not_rejected() {
    let e = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":{"x":1},"_meta":null}}"#,
    );
    assert_eq!(e.name, None);
}
