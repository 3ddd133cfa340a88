//! `/health`, `/readiness` and `/liveness` on the proxy port.
//!
//! `/readiness` answers `200` only while the process is not draining (SIGTERM) and every
//! group has at least one server up, else `503` naming the groups with none.

use crate::state::State;

/// Is `path` one of the health probes?
pub fn is_probe(path: &str) -> bool {
    matches!(path, "/health" | "/liveness" | "/readiness")
}

/// The status and JSON body for a health path, or `None` for any other path.
/// `draining`: SIGTERM was received (readiness is 503 so load balancers stop sending).
pub fn answer(path: &str, state: &State, draining: bool) -> Option<(u16, Vec<u8>)> {
    match path {
        "/health" | "/liveness" => Some((200, br#"{"status":"ok"}"#.to_vec())),
        "/readiness" => {
            // Ready while not draining and every group has a server up (resolved,
            // passing checks).
            let down: Vec<&str> = state
                .groups
                .0
                .iter()
                .filter(|(_, g)| !g.any_up())
                .map(|(name, _)| name.as_str())
                .collect();
            let ready = !draining && down.is_empty();
            let body = serde_json::json!({
                "ready": ready,
                "draining": draining,
                "groups": state.groups.0.len(),
                "groups_without_servers_up": down,
            })
            .to_string();
            Some((if ready { 200 } else { 503 }, body.into_bytes()))
        }
        _ => None,
    }
}
