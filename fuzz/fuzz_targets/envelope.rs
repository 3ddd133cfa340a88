//! The JSON-RPC envelope inspector on any body (both eras, batches): never a panic, and
//! every accepted message's routing headers can be built.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_gateway::mcp::envelope::{inspect, Body};

fuzz_target!(|data: &[u8]| {
    if let Ok(body) = inspect(data) {
        let messages = match &body {
            Body::Single(e) => vec![e],
            Body::Batch(items) => items.iter().collect(),
        };
        for e in messages {
            let _ = mcp_gateway::mcp::headers::routing(e);
            let _ = e.era();
        }
    }
});
