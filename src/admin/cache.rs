//! `/api/v1/cache`: the cache's sizes, and purging its entries.
//!
//! * `GET /api/v1/cache`: entries and bytes in memory, the configured limits, the
//!   cached routes, and whether the Redis level is in use;
//! * `POST /api/v1/cache/purge` with `{"route": …, "method": …, "tool": …}` (each
//!   optional; `{}` drops everything): drops the matching entries in memory, in Redis
//!   and in every replica listening on the invalidation channel.

use super::Admin;
use crate::cache::store::Purge;
use http::StatusCode;
use serde_json::{json, Value};

pub fn sizes(admin: &Admin) -> Value {
    let state = admin.state();
    let config = &admin.live.loaded().config.cache;
    let routes: Vec<&str> = config.routes.iter().map(|r| r.path.as_str()).collect();
    match state.cache.store() {
        None => json!({ "enabled": false, "routes": routes }),
        Some(store) => {
            let (entries, bytes) = store.sizes();
            json!({
                "enabled": true,
                "routes": routes,
                "memory": {
                    "entries": entries,
                    "bytes": bytes,
                    "max_size": config.memory.max_size.0,
                    "max_entry_size": config.memory.max_entry_size.0,
                },
                "redis": store.redis.as_ref().map(|r| json!({ "up": r.is_up() })),
            })
        }
    }
}

/// Drop what `body` names; answers how many memory entries went.
pub fn purge(admin: &Admin, body: &[u8]) -> Result<Value, (StatusCode, String)> {
    let p: Purge = if body.iter().all(u8::is_ascii_whitespace) {
        Purge::default()
    } else {
        serde_json::from_slice(body).map_err(|e| {
            (
                StatusCode::BAD_REQUEST,
                format!(
                    "the body must be a JSON object with optional \"route\", \"method\" and \
                     \"tool\" (strings): {e}"
                ),
            )
        })?
    };
    if p.group.is_some() {
        return Err((
            StatusCode::BAD_REQUEST,
            "purge by \"route\", \"method\" or \"tool\" (a route's entries are its group's)".into(),
        ));
    }
    let state = admin.state();
    let Some(store) = state.cache.store() else {
        return Err((
            StatusCode::CONFLICT,
            "no cache is configured (cache.routes is empty)".into(),
        ));
    };
    let group_of = |route: &str| state.routes.get(route).map(|r| r.group.name.clone());
    let groups = match &p.route {
        Some(route) => match group_of(route).filter(|_| state.cache.covers(route)) {
            Some(g) => vec![g],
            None => {
                return Err((
                    StatusCode::NOT_FOUND,
                    format!("{route:?} is not a cached route (cache.routes)"),
                ))
            }
        },
        // Every cached route's group: Redis keeps entries per group.
        None => state.cache.groups(group_of),
    };
    let purged = store.purge(&p, groups);
    log::info!(
        "cache purged through the admin API ({}): {purged} entries in memory",
        serde_json::to_string(&p).unwrap_or_default()
    );
    Ok(json!({ "purged": purged }))
}
