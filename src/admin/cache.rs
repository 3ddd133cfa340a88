//! `/api/v1/cache`: the cache's sizes, and purging its entries.
//!
//! * `GET /api/v1/cache`: entries and bytes in memory, the configured limits, the
//!   cached routes, and whether the Redis level is in use;
//! * `POST /api/v1/cache/purge` with `{"route": …, "method": …, "tool": …}` (each
//!   optional; `{}` drops everything): drops the matching entries in memory, in Redis
//!   and in every replica listening on the invalidation channel.

use super::Admin;
use crate::cache::store::Purge;
use crate::telemetry::metrics::METRICS;
use http::StatusCode;
use serde_json::{json, Value};

pub fn sizes(admin: &Admin) -> Value {
    let state = admin.state();
    let config = &admin.live.loaded().config.cache;
    let names = config
        .routes
        .iter()
        .map(|r| crate::config::cache::scope_name(&r.path, r.member.as_deref()));
    match state.cache.store() {
        None => json!({ "enabled": false, "routes": names.collect::<Vec<_>>() }),
        Some(store) => {
            let (entries, bytes) = store.sizes();
            // Each route's (and member's) share of the memory level.
            let routes: Vec<Value> = names
                .map(|name| {
                    let of = |g: &prometheus::IntGaugeVec| g.with_label_values(&[&name]).get();
                    json!({
                        "route": name,
                        "entries": of(&METRICS.cache_memory_entries),
                        "bytes": of(&METRICS.cache_memory_bytes),
                    })
                })
                .collect();
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
    let groups = match &p.route {
        Some(route) => match state.cache.group(route) {
            Some(g) => vec![g.to_string()],
            None => {
                return Err((
                    StatusCode::NOT_FOUND,
                    format!("{route:?} is not a cached route (cache.routes)"),
                ))
            }
        },
        // Every cached route's group: Redis keeps entries per group.
        None => state.cache.groups(),
    };
    let purged = store.purge(&p, groups);
    log::info!(
        "cache purged through the admin API ({}): {purged} entries in memory",
        serde_json::to_string(&p).unwrap_or_default()
    );
    Ok(json!({ "purged": purged }))
}
