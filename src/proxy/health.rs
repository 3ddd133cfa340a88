//! `/health`, `/readiness` and `/liveness` on the proxy port.

use super::State;
use std::sync::atomic::Ordering;

/// The status and JSON body for a health path, or `None` for any other path.
pub fn answer(path: &str, state: &State) -> Option<(u16, Vec<u8>)> {
    match path {
        "/health" | "/liveness" => Some((200, br#"{"status":"ok"}"#.to_vec())),
        "/readiness" => {
            let ready = state.ready.load(Ordering::Acquire);
            let body = format!(r#"{{"ready":{ready},"groups":{}}}"#, state.groups.0.len());
            Some((if ready { 200 } else { 503 }, body.into_bytes()))
        }
        _ => None,
    }
}
