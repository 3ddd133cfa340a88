//! The list filter on an SSE answer cut at arbitrary chunk boundaries: never a panic,
//! and the same output however the bytes were cut.
#![no_main]
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use mcp_gateway::proxy::list_filter::{Caller, ListFilter};
use mcp_gateway::security::policy::Policies;
use std::sync::OnceLock;

static POLICIES: OnceLock<Policies> = OnceLock::new();

fn filtered(chunks: &[&[u8]]) -> Vec<u8> {
    let policies = POLICIES.get_or_init(|| Policies::build(&[]).expect("no rules"));
    let who = Caller {
        policies,
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

fuzz_target!(|data: &[u8]| {
    let Some((&cut, body)) = data.split_first() else {
        return;
    };
    let at = (cut as usize).min(body.len());
    let whole = filtered(&[body]);
    let split = filtered(&[&body[..at], &body[at..]]);
    assert_eq!(whole, split, "cut at {at}");
});
