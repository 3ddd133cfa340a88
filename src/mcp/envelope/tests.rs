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
fn each_method_is_read_on_its_own_field() {
    // A decoy field beside the one the method defines changes nothing, in either order.
    for params in [
        r#"{"name":"decoy","uri":"file:///x"}"#,
        r#"{"uri":"file:///x","name":"decoy"}"#,
    ] {
        for method in [
            "resources/read",
            "resources/subscribe",
            "resources/unsubscribe",
        ] {
            let e = one(&format!(
                r#"{{"jsonrpc":"2.0","id":"a","method":"{method}","params":{params}}}"#
            ));
            assert_eq!(e.name.as_deref(), Some("file:///x"), "{method} {params}");
            assert_eq!(e.names, Some(Names::Resource));
            assert_eq!(e.era(), Era::Legacy);
        }
        for (method, names) in [("tools/call", Names::Tool), ("prompts/get", Names::Prompt)] {
            let e = one(&format!(
                r#"{{"jsonrpc":"2.0","id":"a","method":"{method}","params":{params}}}"#
            ));
            assert_eq!(e.name.as_deref(), Some("decoy"), "{method} {params}");
            assert_eq!(e.names, Some(names));
        }
    }
    // A resource read without a uri names nothing (its `name` is not a URI).
    let e = one(r#"{"jsonrpc":"2.0","id":1,"method":"resources/read","params":{"name":"x"}}"#);
    assert_eq!((e.name, e.names), (None, None));
    // Completions name what their ref names.
    let e = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"argument":{"name":"a","value":"b"},"ref":{"name":"p","type":"ref/prompt","uri":"u"}}}"#,
    );
    assert_eq!(
        (e.name.as_deref(), e.names),
        (Some("p"), Some(Names::Prompt))
    );
    let e = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"name":"p","uri":"mem://{x}","type":"ref/resource"}}}"#,
    );
    assert_eq!(
        (e.name.as_deref(), e.names),
        (Some("mem://{x}"), Some(Names::Resource))
    );
    let e = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"completion/complete","params":{"ref":{"type":"ref/other","name":"p"}}}"#,
    );
    assert_eq!((e.name, e.names), (None, None));
    // Other methods name nothing.
    let e = one(r#"{"jsonrpc":"2.0","id":1,"method":"tools/list","params":{"name":"x"}}"#);
    assert_eq!(e.name, None);
}

#[test]
fn ambiguous_keys_are_refused() {
    let ambiguous = [
        r#"{"jsonrpc":"2.0","id":1,"method":"a","method":"b"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a","METHOD":"b"}"#,
        r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"a"}"#,
        r#"{"jsonrpc":"2.0","Id":1,"method":"a"}"#,
        r#"{"jsonrpc":"2.0","jsonrpc":"2.0","id":1,"method":"a"}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a","params":{},"params":{}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"name":"x","nAme":"y"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"uri":"x","uri":"y"}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"ref":{},"REF":{}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"ref":{"type":"ref/prompt","tYpe":"ref/resource"}}}"#,
        r#"{"jsonrpc":"2.0","id":1,"method":"a","params":{"_meta":{"io.modelcontextprotocol/protocolVersion":"1","io.modelcontextprotocol/protocolversion":"2"}}}"#,
        "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"a\",\"param\u{17f}\":{}}",
        r#"{"jsonrpc":"2.0","id":1,"method":"a","para\u006ds":{},"params":{}}"#,
    ];
    for b in ambiguous {
        match inspect(b.as_bytes()) {
            Err(InspectError::Invalid(m, _)) => assert!(m.contains("ambiguous"), "{b}: {m}"),
            other => panic!("{b}: {other:?}"),
        }
    }
    // Members the gateway does not read are not its business.
    let e = one(
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"x","arguments":{"name":1,"NAME":2},"Arguments":1,"names":2},"Result":1,"methods":2}"#,
    );
    assert_eq!(e.name.as_deref(), Some("x"));
    assert!(!folds_to("nam", "name") && !folds_to("names", "name"));
    assert!(folds_to("NAME", "name") && folds_to("\u{17f}", "s") && folds_to("\u{212a}", "k"));
}

#[test]
fn bodies_that_are_not_utf8_are_parse_errors() {
    for b in [
        &b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xff\xfe\"}"[..],
        b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\",\"params\":{\"arguments\":\"\xc3\"}}",
        b"[{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"\xed\xa0\x80\"}]",
    ] {
        match inspect(b) {
            Err(InspectError::Parse(m)) => assert!(m.contains("UTF-8"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
    // A method that is JSON but not a string is an invalid request, not a parse error.
    assert!(matches!(
        inspect(br#"{"jsonrpc":"2.0","id":1,"method":["x"]}"#),
        Err(InspectError::Invalid(m, _)) if m == "\"method\" must be a string"
    ));
    // A body cut inside the method is a parse error.
    assert!(matches!(
        inspect(br#"{"jsonrpc":"2.0","id":1,"method":"too"#),
        Err(InspectError::Parse(_))
    ));
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
    // An error about a request whose id could not be read answers with a null id.
    let r = one(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"x"}}"#);
    assert_eq!(r.kind, Kind::Response);
    assert!(
        inspect(br#"{"jsonrpc":"2.0","result":{}}"#).is_err(),
        "no id at all"
    );
    let unknown = one(r#"{"jsonrpc":"2.0","id":1,"method":"vendor/thing","params":[1,2]}"#);
    assert_eq!(unknown.method.as_deref(), Some("vendor/thing"));
    assert!(!unknown.method_is_known());
    assert!(n.method_is_known());
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

#[test]
fn text_that_is_not_json_is_a_parse_error_whatever_fails_first() {
    // Found by the property tests: a string then more text failed as a wrong type.
    assert!(matches!(inspect(br#"""0"#), Err(InspectError::Parse(_))));
    assert!(matches!(inspect(b"\"x\""), Err(InspectError::Invalid(..))));
}
