//! What one request leaves behind: the metrics (one call per request at its end, one per
//! upstream attempt, and the `tools/list` answers that teach a group its tool names), its
//! trace span and its access log line.

use super::ctx::RequestCtx;
use crate::telemetry::metrics::{self, mcp_method_label, METRICS};
use crate::upstream::Group;
use bytes::{Bytes, BytesMut};
use pingora::proxy::Session;

/// The status the client got (0 when nothing was sent).
pub fn client_status(session: &Session, ctx: &RequestCtx) -> u16 {
    super::respond::final_response_written(session)
        .map(|r| r.status.as_u16())
        .or(ctx.local_status)
        .unwrap_or(0)
}

/// Count the finished request (requests, duration, gateway errors, tool calls, the
/// last upstream attempt's duration, and its connection's totals).
pub fn request_end(session: &Session, ctx: &RequestCtx) {
    let req = session.req_header();
    if let Some(conn) = ctx.conn() {
        use std::sync::atomic::Ordering::Relaxed;
        conn.requests.fetch_add(1, Relaxed);
        let s = &session.downstream_session;
        conn.bytes_in.fetch_add(s.body_bytes_read() as u64, Relaxed);
        conn.bytes_out
            .fetch_add(s.body_bytes_sent() as u64, Relaxed);
        if let Some(r) = &ctx.route {
            if conn.route.load().as_deref().map(String::as_str) != Some(r) {
                conn.route.store(Some(std::sync::Arc::new(r.to_string())));
            }
        }
        if let Some(id) = &ctx.identity {
            if conn.identity.load().as_deref().map(String::as_str) != Some(id.subject.as_str()) {
                conn.identity
                    .store(Some(std::sync::Arc::new(id.subject.clone())));
            }
        }
        if let Some(m) = ctx.mcp.method() {
            if conn.last_method.load().as_deref().map(String::as_str) != Some(m) {
                conn.last_method
                    .store(Some(std::sync::Arc::new(m.to_string())));
            }
        }
        if let Some(sid) = req
            .headers
            .get(&crate::mcp::headers::names::SESSION_ID)
            .and_then(|v| v.to_str().ok())
        {
            // Hash (SHA-256) only when the session changed on this connection.
            if conn.session_changed(sid) {
                conn.session.store(Some(std::sync::Arc::new(
                    crate::telemetry::tracing::session_handle(sid),
                )));
            }
        }
    }
    let status = client_status(session, ctx);
    let route = ctx.route.as_deref().unwrap_or("unmatched");
    let group = ctx.group.as_ref().map_or("-", |g| g.name.as_str());
    let method = mcp_method_label(
        ctx.mcp.method(),
        req.method.as_str(),
        ctx.mcp.envelope.is_some(),
    );
    let status_label = metrics::status_label(status);
    metrics::counter(&METRICS.requests, &[route, group, method, status_label]).inc();
    metrics::histogram(&METRICS.request_duration, &[route, group, method])
        .observe(ctx.started.elapsed().as_secs_f64());
    if let Some(e) = &ctx.error {
        let code = e.status_and_code().1.to_string();
        metrics::counter(&METRICS.errors, &[route, e.kind(), &code]).inc();
    }
    // Each call of a batch counts as if sent alone.
    if let Some(g) = &ctx.group {
        for env in ctx.mcp.messages() {
            if env.method.as_deref() != Some("tools/call") {
                continue;
            }
            let tool = match env.name.as_deref() {
                Some(n) if g.tools.contains(n) => n,
                _ => "other",
            };
            metrics::counter(&METRICS.tool_calls, &[group, tool, status_label]).inc();
        }
    }
    if let (Some(server), Some(started), Some(_)) =
        (ctx.server(), ctx.upstream_started, ctx.upstream_status)
    {
        metrics::histogram(&METRICS.upstream_duration, &[group, &server.id])
            .observe(started.elapsed().as_secs_f64());
    }
}

/// Name the request's span after its MCP method and target, and set the MCP attributes.
pub fn span_request(session: &Session, ctx: &mut RequestCtx) {
    use opentelemetry::KeyValue;
    let route = ctx.route.clone();
    let method = ctx.mcp.method().map(str::to_string);
    let name = ctx.mcp.name().map(str::to_string);
    let era = ctx.era().map(|e| e.as_str());
    let id = ctx
        .mcp
        .envelope
        .as_ref()
        .and_then(|e| e.id.as_ref())
        .map(|id| id.get().to_string());
    let session_id = session
        .req_header()
        .headers
        .get(&crate::mcp::headers::names::SESSION_ID)
        .and_then(|v| v.to_str().ok())
        .map(crate::telemetry::tracing::session_handle);
    let identity = ctx.identity.as_ref().map(|i| i.subject.clone());
    let req = session.req_header();
    let Some(span) = ctx.span.as_mut() else {
        return;
    };
    span.set(KeyValue::new("http.request.method", req.method.to_string()));
    span.set(KeyValue::new("url.path", req.uri.path().to_string()));
    span.set(KeyValue::new(
        "mcp.gateway.request_id",
        ctx.request_id.clone(),
    ));
    if let Some(r) = route {
        span.set(KeyValue::new("http.route", r.to_string()));
    }
    if let Some(m) = &method {
        span.set(KeyValue::new("mcp.method.name", m.clone()));
        span.set_name(match &name {
            Some(n) => format!("{m} {n}"),
            None => m.clone(),
        });
    }
    if let Some(n) = name {
        let key = if method.as_deref() == Some("resources/read") {
            "mcp.resource.uri"
        } else {
            "gen_ai.tool.name"
        };
        span.set(KeyValue::new(key, n));
    }
    if let Some(e) = era {
        span.set(KeyValue::new("mcp.protocol.era", e));
    }
    if let Some(id) = id {
        span.set(KeyValue::new("jsonrpc.request.id", id));
    }
    if let Some(s) = session_id {
        span.set(KeyValue::new("mcp.session.id", s));
    }
    if let Some(id) = &identity {
        span.set(KeyValue::new("enduser.id", id.clone()));
    }
}

/// Finish the request's span with the outcome.
pub fn span_end(session: &Session, ctx: &mut RequestCtx, e: Option<&pingora::Error>) {
    use opentelemetry::KeyValue;
    let status = client_status(session, ctx);
    let group = ctx.group.as_ref().map(|g| g.name.clone());
    let server = ctx.server().map(|s| s.id.clone());
    let error = ctx
        .error
        .as_ref()
        .map(|e| e.kind().to_string())
        .or_else(|| e.map(|e| e.etype().as_str().to_string()))
        .or_else(|| (status >= 500).then(|| status.to_string()));
    let Some(mut span) = ctx.span.take() else {
        return;
    };
    span.set(KeyValue::new(
        "http.response.status_code",
        i64::from(status),
    ));
    if let Some(g) = group {
        span.set(KeyValue::new("mcp.gateway.group", g));
    }
    if let Some(s) = server {
        span.set(KeyValue::new("mcp.gateway.server", s));
    }
    span.end(error.as_deref());
}

/// Count one upstream attempt: `2xx`..`5xx` for an answer, `connect_error`, `error`.
pub fn upstream_attempt(ctx: &RequestCtx, outcome: &str) {
    if let (Some(g), Some(s)) = (ctx.group.as_ref(), ctx.server()) {
        metrics::counter(
            &METRICS.upstream_requests,
            &[g.name.as_str(), s.id.as_str(), outcome],
        )
        .inc();
    }
}

pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Largest `tools/list` answer collected for the catalog.
const MAX_TOOLS_LIST: usize = 4 << 20;

/// Collect a `tools/list` answer's body (`list`: the request's `tools_list`); at its
/// end, teach the group its tool names.
pub fn collect_tools(
    list: &mut Option<BytesMut>,
    group: Option<&Group>,
    body: Option<&Bytes>,
    end: bool,
) {
    let Some(buf) = list.as_mut() else {
        return;
    };
    if let Some(chunk) = body {
        if buf.len() + chunk.len() > MAX_TOOLS_LIST {
            *list = None;
            return;
        }
        buf.extend_from_slice(chunk);
    }
    if end {
        let buf = list.take().unwrap_or_default();
        if let Some(g) = group {
            let names = tool_names(&buf);
            let added = g.tools.learn(names.iter().map(String::as_str));
            if added > 0 {
                log::debug!("group {}: learned {added} tool name(s)", g.name);
            }
        }
    }
}

/// The `result.tools[].name` of a `tools/list` answer, as JSON or in SSE `data:` lines.
pub fn tool_names(body: &[u8]) -> Vec<String> {
    fn from(v: &serde_json::Value) -> Vec<String> {
        v.pointer("/result/tools")
            .and_then(|t| t.as_array())
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| t.get("name")?.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        return from(&v);
    }
    String::from_utf8_lossy(body)
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<serde_json::Value>(d.trim()).ok())
        .flat_map(|v| from(&v))
        .collect()
}

/// One line per request on the `access` target. Secrets never reach it: no header values
/// and no bodies.
pub fn access_log(session: &Session, e: Option<&pingora::Error>, ctx: &RequestCtx) {
    if !log::log_enabled!(target: "access", log::Level::Info) {
        return;
    }
    let req = session.req_header();
    let status = client_status(session, ctx);
    let line = serde_json::json!({
        "request_id": ctx.request_id,
        "client": session.client_addr().map(|a| a.to_string()),
        "client_ip": ctx.client_ip(session).map(|ip| ip.to_string()),
        "method": req.method.as_str(),
        "path": req.uri.path(),
        "route": ctx.route.as_deref(),
        "identity": ctx.identity.as_ref().map(|i| i.subject.as_str()),
        "auth": ctx.identity.as_ref().map(|i| i.method),
        "auth_rule": ctx.identity.as_ref().map(|i| i.rule.as_str()),
        "status": status,
        "duration_ms": ctx.started.elapsed().as_secs_f64() * 1000.0,
        "group": ctx.group.as_ref().map(|g| g.name.as_str()),
        "server": ctx.server().map(|s| s.id.as_str()),
        "mcp_method": ctx.mcp.method(),
        "mcp_name": ctx.mcp.name(),
        "era": ctx.era().map(|e| e.as_str()),
        "batch": ctx.mcp.batch_len,
        "error": ctx.error.as_ref().map(|e| e.kind()),
        "jsonrpc_error": ctx.error.as_ref().map(|e| e.status_and_code().1),
        "bytes_in": session.downstream_session.body_bytes_read(),
        "bytes_out": session.downstream_session.body_bytes_sent(),
        "proxy_error": e.map(|e| e.etype().as_str()),
    });
    log::info!(target: "access", "{line}");
}

#[cfg(test)]
mod tests {
    use super::tool_names;

    #[test]
    fn tool_names_from_json_and_sse() {
        let json =
            br#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"add"}]}}"#;
        assert_eq!(tool_names(json), ["echo", "add"]);
        let sse = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{\"tools\":[{\"name\":\"x\"}]}}\n\n";
        assert_eq!(tool_names(sse), ["x"]);
        assert!(tool_names(b"nope").is_empty());
    }
}
