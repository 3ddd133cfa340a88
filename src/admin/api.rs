//! `/api/v1` routes of the admin service (read-only so far).

use super::Admin;
use crate::config::load::MAX_WEIGHT;
use crate::proxy::connections::CONNECTIONS;
use crate::telemetry::metrics::METRICS;
use crate::upstream::{Group, Server};
use http::StatusCode;
use pingora::protocols::http::ServerSession;
use prometheus::core::{Collector, Metric};
use serde_json::{json, Value};

type ApiResult = Result<Value, (StatusCode, String)>;

/// Largest request body the API reads.
const MAX_BODY: usize = 64 * 1024;

/// Routes that change the running gateway: servers added, removed, drained.
/// `Ok(None)` when the path is not one of them.
pub async fn mutate(
    admin: &Admin,
    session: &mut ServerSession,
    method: &str,
    path: &str,
) -> Result<Option<(StatusCode, Value)>, (StatusCode, String)> {
    let rest = path.trim_start_matches("/api/v1").trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let state = admin.state();
    let group = |name: &str| {
        state
            .groups
            .get(name)
            .cloned()
            .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no upstream group {name:?}")))
    };
    let conflict = |e: String| (StatusCode::CONFLICT, e);
    match (method, parts.as_slice()) {
        ("POST", ["reload"]) => Ok(Some(match admin.live.reload().await {
            Ok(done) => (StatusCode::OK, json!(done)),
            Err(problems) => {
                log::error!(
                    "reload requested through the admin API: config not reloaded: {}",
                    problems.join("; ")
                );
                (
                    StatusCode::UNPROCESSABLE_ENTITY,
                    json!({
                        "error": "config not reloaded; the running config stays",
                        "problems": problems,
                    }),
                )
            }
        })),
        ("POST", ["cache", "purge"]) => {
            let body = read_body(session).await?;
            super::cache::purge(admin, &body).map(|v| Some((StatusCode::OK, v)))
        }
        ("POST", ["upstreams", name, "servers"]) => {
            let g = group(name)?;
            let body = read_body(session).await?;
            let entry: NewServer = serde_json::from_slice(&body).map_err(|e| {
                (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "expected {{\"id\": ..., \"url\": ..., \"weight\": 1..{MAX_WEIGHT}}}: {e}"
                    ),
                )
            })?;
            if entry.id.is_empty() || entry.id.len() > 255 {
                return Err((StatusCode::BAD_REQUEST, "id must be 1 to 255 bytes".into()));
            }
            if !(1..=MAX_WEIGHT).contains(&entry.weight) {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("weight must be between 1 and {MAX_WEIGHT}"),
                ));
            }
            let server = g
                .new_server(&entry.id, &entry.url, entry.weight)
                .map_err(|e| (StatusCode::BAD_REQUEST, e))?;
            let address = server
                .target
                .resolve()
                .await
                .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
            server
                .set_address(address)
                .map_err(|e| (StatusCode::UNPROCESSABLE_ENTITY, e))?;
            let server = std::sync::Arc::new(server);
            // One change at a time: the check above and the swap below stay consistent.
            let _guard = admin.changes.lock().await;
            g.add(server.clone()).map_err(conflict)?;
            log::info!(
                "admin: added server {}/{} ({})",
                g.name,
                server.id,
                server.url
            );
            Ok(Some((StatusCode::CREATED, server_json(&g.name, &server))))
        }
        ("DELETE", ["upstreams", name, "servers", id]) => {
            let g = group(name)?;
            let _guard = admin.changes.lock().await;
            let removed = g.remove(id).map_err(|e| {
                if e.contains("no server") {
                    (StatusCode::NOT_FOUND, e)
                } else {
                    conflict(e)
                }
            })?;
            log::info!("admin: removed server {}/{}", g.name, removed.id);
            Ok(Some((
                StatusCode::OK,
                json!({ "removed": removed.id, "in_flight": removed.in_flight() }),
            )))
        }
        ("DELETE", ["connections", id]) => {
            let conn = id
                .parse::<u64>()
                .ok()
                .and_then(|id| CONNECTIONS.get(&id).map(|e| e.value().clone()))
                .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no open connection {id:?}")))?;
            conn.close();
            Ok(Some((
                StatusCode::OK,
                json!({ "closed": conn.id, "client": conn.client }),
            )))
        }
        ("POST", ["upstreams", name, "servers", id, action @ ("drain" | "undrain")]) => {
            let g = group(name)?;
            let s = g.server_by_id(id).ok_or_else(|| {
                (
                    StatusCode::NOT_FOUND,
                    format!("group {name:?} has no server {id:?}"),
                )
            })?;
            s.set_draining(*action == "drain");
            log::info!("admin: {action} server {}/{}", g.name, s.id);
            Ok(Some((StatusCode::OK, server_json(&g.name, &s))))
        }
        _ => Ok(None),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewServer {
    id: String,
    url: String,
    #[serde(default = "default_weight")]
    weight: u32,
}

fn default_weight() -> u32 {
    100
}

async fn read_body(session: &mut ServerSession) -> Result<Vec<u8>, (StatusCode, String)> {
    let mut body = Vec::new();
    loop {
        match session.read_request_body().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_BODY {
                    return Err((
                        StatusCode::PAYLOAD_TOO_LARGE,
                        format!("the body exceeds {MAX_BODY} bytes"),
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(body),
            Err(e) => return Err((StatusCode::BAD_REQUEST, format!("reading the body: {e}"))),
        }
    }
}

pub fn route(admin: &Admin, method: &str, path: &str) -> ApiResult {
    let rest = path.trim_start_matches("/api/v1").trim_end_matches('/');
    let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
    let get = |f: &dyn Fn() -> ApiResult| {
        if method == "GET" {
            f()
        } else {
            Err((
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path} (use GET)"),
            ))
        }
    };
    match parts.as_slice() {
        ["status"] => get(&|| Ok(status(admin))),
        ["config"] => get(&|| Ok(admin.config_redacted())),
        ["summary"] => get(&|| Ok(summary(admin))),
        ["connections"] => get(&|| Ok(json!({ "connections": connections() }))),
        ["cache"] => get(&|| Ok(super::cache::sizes(admin))),
        ["upstreams"] => get(&|| {
            let state = admin.state();
            let mut groups: Vec<&std::sync::Arc<Group>> = state.groups.0.values().collect();
            groups.sort_by(|a, b| a.name.cmp(&b.name));
            Ok(json!({ "groups": groups.iter().map(|g| group_json(g)).collect::<Vec<_>>() }))
        }),
        ["virtual_servers"] => get(&|| {
            let state = admin.state();
            let all: Vec<Value> = state
                .virtual_servers
                .iter()
                .map(|v| virtual_server_json(v))
                .collect();
            Ok(json!({ "virtual_servers": all }))
        }),
        ["upstreams", name, "status"] => get(&|| {
            admin
                .state()
                .groups
                .get(name)
                .map(|g| group_json(g))
                .ok_or_else(|| (StatusCode::NOT_FOUND, format!("no upstream group {name:?}")))
        }),
        _ => Err((
            StatusCode::NOT_FOUND,
            format!("no admin API endpoint {method} {path}"),
        )),
    }
}

/// A virtual server: its members, their state (`degraded` after a failure until they
/// answer again) and the sizes of their last complete lists.
fn virtual_server_json(v: &crate::state::virtual_servers::VirtualServer) -> Value {
    use std::sync::atomic::Ordering::Relaxed;
    let members: Vec<Value> = v
        .members
        .iter()
        .map(|m| {
            json!({
                "prefix": m.prefix,
                "group": m.group.name,
                "state": if m.status.is_degraded() { "degraded" } else if m.group.any_up() { "ok" } else { "down" },
                "servers_up": m.group.servers().iter().filter(|s| s.is_up()).count(),
                "tools": m.status.tools.load(Relaxed),
                "prompts": m.status.prompts.load(Relaxed),
                "resources": m.status.resources.load(Relaxed),
            })
        })
        .collect();
    json!({
        "path": &*v.path,
        "name": v.name,
        "prefix_mode": match v.prefix_mode { crate::config::PrefixMode::Always => "always", crate::config::PrefixMode::Never => "never" },
        "separator": v.separator,
        "on_member_failure": if v.fail_open { "fail_open" } else { "fail_closed" },
        "members": members,
    })
}

/// The sum of a counter family over all its label sets.
fn total(c: &prometheus::IntCounterVec) -> u64 {
    c.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_counter().get_value() as u64)
        .sum()
}

fn gauge_total(g: &prometheus::IntGaugeVec) -> i64 {
    g.collect()
        .iter()
        .flat_map(|f| f.get_metric())
        .map(|m| m.get_gauge().get_value() as i64)
        .sum()
}

/// Open client connections, oldest first.
fn connections() -> Vec<Value> {
    use std::sync::atomic::Ordering::Relaxed;
    CONNECTIONS
        .iter()
        .map(|e| {
            let c = e.value();
            json!({
                "id": c.id,
                "client": c.client,
                "started": c
                    .started
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_secs_f64())
                    .unwrap_or(0.0),
                "age_seconds": c.age_seconds(),
                "requests": c.requests.load(Relaxed),
                "active_requests": c.active.load(Relaxed),
                "bytes_in": c.bytes_in.load(Relaxed),
                "bytes_out": c.bytes_out.load(Relaxed),
                "route": c.route.load().as_deref(),
                "last_method": c.last_method.load().as_deref(),
                "session": c.session.load().as_deref(),
                // The authenticated subject of its latest request (null: anonymous).
                "identity": c.identity.load().as_deref(),
            })
        })
        .collect()
}

fn status(admin: &Admin) -> Value {
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "uptime_seconds": admin.started.elapsed().as_secs_f64(),
        "config": {
            "source": admin.live.loaded().source.name,
            "sha256": admin.live.loaded().sha256,
        },
        "counters": {
            "requests": total(&METRICS.requests),
            "errors": total(&METRICS.errors),
            "connections_active": METRICS.connections_active.get(),
            "requests_active": METRICS.requests_active.get(),
            "sse_streams_active": gauge_total(&METRICS.sse_streams_active),
            "sessions": total(&METRICS.sessions),
            "upstream_requests": total(&METRICS.upstream_requests),
        },
    })
}

fn group_json(g: &Group) -> Value {
    json!({
        "name": g.name,
        "strategy": g.strategy(),
        "servers_up": g.servers().iter().filter(|s| s.is_up()).count(),
        "tools": g.tools.names(),
        "servers": g.servers().iter().map(|s| server_json(&g.name, s)).collect::<Vec<_>>(),
    })
}

fn server_json(group: &str, s: &Server) -> Value {
    // Attempts by outcome, from mcp_gateway_upstream_requests_total.
    let mut requests = 0u64;
    let mut errors = 0u64;
    for f in METRICS.upstream_requests.collect() {
        for m in f.get_metric() {
            let labels: Vec<(&str, &str)> = m
                .get_label()
                .iter()
                .map(|l| (l.name(), l.value()))
                .collect();
            let has = |k: &str, v: &str| labels.iter().any(|(lk, lv)| *lk == k && *lv == v);
            if has("group", group) && has("server", &s.id) {
                let n = m.get_counter().get_value() as u64;
                requests += n;
                if !(has("outcome", "1xx")
                    || has("outcome", "2xx")
                    || has("outcome", "3xx")
                    || has("outcome", "4xx"))
                {
                    errors += n;
                }
            }
        }
    }
    let h = METRICS
        .upstream_duration
        .with_label_values(&[group, s.id.as_str()]);
    json!({
        "id": s.id,
        "url": s.url,
        "address": s.address().map(|a| a.to_string()),
        "up": s.is_up(),
        "draining": s.is_draining(),
        "breaker": s.breaker.state().as_str(),
        "in_flight": s.in_flight(),
        "weight": s.weight,
        // A server the gateway runs (command:): its processes and their exits.
        "stdio": crate::transport::stdio::status(&s.url),
        "requests": requests,
        "errors": errors,
        "latency_ms": {
            "p50": quantile(&h, 0.50).map(|v| v * 1000.0),
            "p99": quantile(&h, 0.99).map(|v| v * 1000.0),
        },
    })
}

/// Everything the dashboard shows, in one answer: totals (the page turns them into
/// rates), latency over all requests, live gauges, upstreams and the busiest tools.
fn summary(admin: &Admin) -> Value {
    let mut by_class = std::collections::BTreeMap::<String, u64>::new();
    for f in METRICS.requests.collect() {
        for m in f.get_metric() {
            let status = m
                .get_label()
                .iter()
                .find(|l| l.name() == "status")
                .map(|l| l.value())
                .unwrap_or("0");
            let class = match status.as_bytes().first() {
                Some(c @ b'1'..=b'5') => format!("{}xx", *c as char),
                _ => "none".to_string(),
            };
            *by_class.entry(class).or_default() += m.get_counter().get_value() as u64;
        }
    }
    // All label sets of the request histogram merged: overall latency.
    let mut buckets: Vec<(f64, u64)> = Vec::new();
    for f in METRICS.request_duration.collect() {
        for m in f.get_metric() {
            for (i, b) in m.get_histogram().get_bucket().iter().enumerate() {
                match buckets.get_mut(i) {
                    Some(slot) => slot.1 += b.cumulative_count(),
                    None => buckets.push((b.upper_bound(), b.cumulative_count())),
                }
            }
        }
    }
    let total_count = buckets.last().map_or(0, |b| b.1);
    let mut tools: Vec<(String, String, u64)> = Vec::new();
    for f in METRICS.tool_calls.collect() {
        for m in f.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_string())
                    .unwrap_or_default()
            };
            let (group, tool) = (label("group"), label("tool"));
            let n = m.get_counter().get_value() as u64;
            match tools.iter_mut().find(|(g, t, _)| *g == group && *t == tool) {
                Some(entry) => entry.2 += n,
                None => tools.push((group, tool, n)),
            }
        }
    }
    tools.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| a.1.cmp(&b.1)));
    tools.truncate(10);
    let state = admin.state();
    let mut groups: Vec<&std::sync::Arc<Group>> = state.groups.0.values().collect();
    groups.sort_by(|a, b| a.name.cmp(&b.name));
    json!({
        "time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0),
        "uptime_seconds": admin.started.elapsed().as_secs_f64(),
        "version": env!("CARGO_PKG_VERSION"),
        "requests": total(&METRICS.requests),
        "requests_by_status": by_class,
        "gateway_errors": total(&METRICS.errors),
        "latency_ms": {
            "p50": bucket_quantile(&buckets, total_count, 0.50).map(|v| v * 1000.0),
            "p99": bucket_quantile(&buckets, total_count, 0.99).map(|v| v * 1000.0),
        },
        "connections_active": METRICS.connections_active.get(),
        "sse_streams_active": gauge_total(&METRICS.sse_streams_active),
        "sessions": total(&METRICS.sessions) + total(&METRICS.federation_sessions),
        "upstreams": groups.iter().map(|g| group_json(g)).collect::<Vec<_>>(),
        "virtual_servers": state.virtual_servers.iter().map(|v| virtual_server_json(v)).collect::<Vec<_>>(),
        "top_tools": tools
            .iter()
            .map(|(g, t, n)| json!({"group": g, "tool": t, "calls": n}))
            .collect::<Vec<_>>(),
    })
}

/// A quantile estimated from a histogram's buckets (linear within the bucket, as
/// Prometheus's `histogram_quantile` does). `None` before the first observation.
pub fn quantile(h: &prometheus::Histogram, q: f64) -> Option<f64> {
    let m = h.metric();
    let hist = m.get_histogram();
    let buckets: Vec<(f64, u64)> = hist
        .get_bucket()
        .iter()
        .map(|b| (b.upper_bound(), b.cumulative_count()))
        .collect();
    bucket_quantile(&buckets, hist.get_sample_count(), q)
}

/// [`quantile`] over `(upper bound, cumulative count)` buckets.
fn bucket_quantile(buckets: &[(f64, u64)], count: u64, q: f64) -> Option<f64> {
    if count == 0 {
        return None;
    }
    let rank = q * count as f64;
    let mut prev_bound = 0.0;
    let mut prev_count = 0u64;
    for &(upper, c) in buckets {
        if c as f64 >= rank {
            let in_bucket = (c - prev_count) as f64;
            let frac = if in_bucket > 0.0 {
                (rank - prev_count as f64) / in_bucket
            } else {
                0.0
            };
            return Some(prev_bound + (upper - prev_bound) * frac);
        }
        prev_bound = upper;
        prev_count = c;
    }
    Some(prev_bound)
}
