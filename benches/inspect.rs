//! The inspection path: envelope parsing of typical and large MCP bodies, beside a full
//! `serde_json::Value` parse for scale. Run: `cargo bench --bench inspect`.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use mcp_gateway::mcp::envelope::inspect;

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    let small = br#"{"jsonrpc":"2.0","id":42,"method":"tools/call","params":{"name":"search","arguments":{"query":"pingora","limit":10},"_meta":{"progressToken":"p1"}}}"#.to_vec();
    let modern = br#"{"jsonrpc":"2.0","id":"a1","method":"tools/list","params":{"cursor":"abc","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28"}}}"#.to_vec();
    let big = serde_json::json!({
        "jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": {"arguments": {"path": "/tmp/x", "content": "x".repeat(1 << 20)}, "name": "write_file"}
    })
    .to_string()
    .into_bytes();
    vec![
        ("tools_call_small", small),
        ("tools_list_modern", modern),
        ("tools_call_1mib", big),
    ]
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("inspect");
    for (name, body) in bodies() {
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_function(format!("envelope/{name}"), |b| {
            b.iter(|| inspect(black_box(&body)).unwrap())
        });
        g.bench_function(format!("serde_json_value/{name}"), |b| {
            b.iter(|| serde_json::from_slice::<serde_json::Value>(black_box(&body)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
