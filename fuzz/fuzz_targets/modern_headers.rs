//! The modern era's header checks: a header value decoded (`=?base64?…?=` included),
//! and a message's `MCP-Protocol-Version` / `Mcp-Method` / `Mcp-Name` fields checked
//! against its body, with the fuzzer choosing both. Never a panic; a value that decodes
//! encodes back to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_gateway::mcp::envelope::{inspect, Body};
use mcp_gateway::mcp::headers::{check_modern, decode_value, encode_value};

fuzz_target!(|data: &[u8]| {
    // The first line is a header value, the rest the body.
    let split = data.iter().position(|b| *b == b'\n').unwrap_or(data.len());
    let (value, body) = data.split_at(split);
    if let Some(text) = decode_value(value) {
        let again = encode_value(&text);
        assert_eq!(decode_value(again.as_bytes()).as_deref(), Some(text.as_str()));
    }
    let Ok(Body::Single(env)) = inspect(body.get(1..).unwrap_or_default()) else {
        return;
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(v) = http::HeaderValue::from_bytes(value) {
        for name in ["mcp-protocol-version", "mcp-method", "mcp-name"] {
            headers.insert(name, v.clone());
        }
    }
    let _ = check_modern(&env, &headers);
    for (name, v) in mcp_gateway::mcp::headers::routing(&env) {
        headers.insert(name, v);
    }
    let _ = check_modern(&env, &headers);
});
