//! Sealed session ids and virtual-server cursors opened from any text: never a panic,
//! and nothing opens but what was sealed with the key.
#![no_main]
use libfuzzer_sys::fuzz_target;
use mcp_gateway::federation::token::Sealer;
use mcp_gateway::mcp::session::SessionKeys;
use std::sync::OnceLock;

static KEYS: OnceLock<SessionKeys> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let keys = KEYS.get_or_init(|| {
        SessionKeys::from_config(&["AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".to_string()])
            .expect("a valid key")
            .0
    });
    let token = String::from_utf8_lossy(data);
    assert!(keys.open("default", None, &token).is_none(), "a forged session opened");
    let sealer = Sealer {
        keys,
        path: "/mcp",
        owner: None,
    };
    assert!(sealer.open_cursor(&token).is_none(), "a forged cursor opened");
    assert!(sealer.open_session(&token).is_none(), "a forged session opened");
});
