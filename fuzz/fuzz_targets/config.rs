//! The config loader on any YAML (with `${VAR}` expansion from a fixed environment):
//! never a panic; a refused config names at least one problem.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let env = |k: &str| (k == "SET").then(|| "value".to_string());
    if let Err(problems) = mcp_gateway::config::load_str(&text, &env) {
        assert!(!problems.is_empty());
    }
});
