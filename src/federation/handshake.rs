//! The handshakes a virtual server answers itself.
//!
//! Legacy era: `initialize` initializes every member concurrently with the client's
//! version, capabilities and `clientInfo`, and answers with the version every member
//! speaks (the client's when all accepted it, else the oldest a member chose), the union
//! of the members' capabilities (only those the gateway relays), its own `serverInfo`
//! and each member's `instructions` under its prefix. Modern era: `server/discover`
//! asks every member and answers with the versions all of them support.

use super::fan::response_of;
use super::member::{self, Call};
use super::serve::{rpc_result, Answer, Fed};
use super::token::{MemberSession, SessionState};
use crate::error::GatewayError;
use crate::telemetry::metrics::{self, METRICS};
use bytes::Bytes;
use serde_json::{json, Map, Value};
use std::time::Instant;

/// Capabilities of a member, as bits (kept in the session).
pub struct Caps;

impl Caps {
    pub const TOOLS: u16 = 1;
    pub const PROMPTS: u16 = 2;
    pub const RESOURCES: u16 = 4;
    pub const SUBSCRIBE: u16 = 8;
    pub const COMPLETIONS: u16 = 16;
    pub const LOGGING: u16 = 32;
    pub const TOOLS_CHANGED: u16 = 64;
    pub const PROMPTS_CHANGED: u16 = 128;
    pub const RESOURCES_CHANGED: u16 = 256;

    /// The bits of a `capabilities` object.
    pub fn of(c: &Value) -> u16 {
        let has = |k: &str| c.get(k).is_some_and(|v| !v.is_null());
        let flag = |k: &str, f: &str| {
            c.get(k).and_then(|v| v.get(f)).and_then(Value::as_bool) == Some(true)
        };
        let mut bits = 0;
        for (key, bit) in [
            ("tools", Self::TOOLS),
            ("prompts", Self::PROMPTS),
            ("resources", Self::RESOURCES),
            ("completions", Self::COMPLETIONS),
            ("logging", Self::LOGGING),
        ] {
            if has(key) {
                bits |= bit;
            }
        }
        for (key, f, bit) in [
            ("tools", "listChanged", Self::TOOLS_CHANGED),
            ("prompts", "listChanged", Self::PROMPTS_CHANGED),
            ("resources", "listChanged", Self::RESOURCES_CHANGED),
            ("resources", "subscribe", Self::SUBSCRIBE),
        ] {
            if flag(key, f) {
                bits |= bit;
            }
        }
        bits
    }

    /// The `capabilities` object the client sees for the members' union of bits.
    pub fn object(bits: u16) -> Value {
        let mut c = Map::new();
        let on = |b: u16| bits & b != 0;
        if on(Self::TOOLS) {
            c.insert(
                "tools".into(),
                json!({"listChanged": on(Self::TOOLS_CHANGED)}),
            );
        }
        if on(Self::PROMPTS) {
            c.insert(
                "prompts".into(),
                json!({"listChanged": on(Self::PROMPTS_CHANGED)}),
            );
        }
        if on(Self::RESOURCES) {
            c.insert(
                "resources".into(),
                json!({"listChanged": on(Self::RESOURCES_CHANGED), "subscribe": on(Self::SUBSCRIBE)}),
            );
        }
        if on(Self::COMPLETIONS) {
            c.insert("completions".into(), json!({}));
        }
        if on(Self::LOGGING) {
            c.insert("logging".into(), json!({}));
        }
        Value::Object(c)
    }

    /// The list methods a member with these bits serves.
    pub fn for_list(method: &str) -> u16 {
        match method {
            "tools/list" => Self::TOOLS,
            "prompts/list" => Self::PROMPTS,
            _ => Self::RESOURCES,
        }
    }
}

/// The client's `initialize`: every member initialized concurrently, the merged answer.
pub async fn initialize<'a>(fed: &mut Fed<'a>, message: Value) -> Result<Answer<'a>, GatewayError> {
    let started = Instant::now();
    let vs = fed.vs();
    let id = message.get("id").cloned().unwrap_or(Value::Null);
    let params = message.get("params").cloned().unwrap_or_else(|| json!({}));
    let version = params
        .get("protocolVersion")
        .and_then(Value::as_str)
        .unwrap_or(crate::mcp::envelope::BATCH_VERSION)
        .to_string();
    let client = json!({
        "capabilities": params.get("capabilities").cloned().unwrap_or_else(|| json!({})),
        "clientInfo": params.get("clientInfo").cloned().unwrap_or_else(|| json!({"name": "unknown", "version": "0"})),
    });
    let fed_ref = &*fed;
    let inits = (0..vs.members.len()).map(|i| member_init(fed_ref, i, &version, &client));
    let results = futures::future::join_all(inits).await;
    let mut state = SessionState {
        version: version.clone(),
        issued_at: crate::mcp::session::now(),
        client,
        members: Default::default(),
    };
    let mut bits = 0u16;
    let mut instructions = Vec::new();
    let mut negotiated = version.clone();
    let mut failed = None;
    for (i, r) in results.into_iter().enumerate() {
        let member = &vs.members[i];
        match r {
            Ok((ms, result)) => {
                fed.member_ok(i);
                bits |= ms.caps;
                // Versions are dates: the oldest any member chose is one all speak.
                if ms.version < negotiated {
                    negotiated = ms.version.clone();
                }
                if let Some(text) = result.get("instructions").and_then(Value::as_str) {
                    instructions.push(format!("## {}\n{text}", member.prefix));
                }
                state.members.insert(member.prefix.clone(), ms);
            }
            Err(e) => {
                fed.member_failed(i, "initialize", &e)?;
                failed = Some(e);
            }
        }
    }
    if state.members.is_empty() {
        return Err(failed.unwrap_or_else(|| GatewayError::Internal("no members".into())));
    }
    state.version = negotiated.clone();
    let mut result = json!({
        "protocolVersion": negotiated,
        "capabilities": Caps::object(bits),
        "serverInfo": {"name": vs.name, "version": env!("CARGO_PKG_VERSION")},
    });
    if !instructions.is_empty() {
        result["instructions"] = Value::String(instructions.join("\n\n"));
    }
    metrics::histogram(
        &METRICS.federation_fan_out_duration,
        &[&vs.path, "initialize"],
    )
    .observe(started.elapsed().as_secs_f64());
    metrics::counter(&METRICS.federation_sessions, &[&vs.path]).inc();
    fed.session = Some(std::sync::Arc::new(state));
    Ok(Answer::Json {
        status: 200,
        body: rpc_result(&id, result),
    })
}

/// Initialize member `index` for a session that lacks it (a failed or forgotten
/// member), then tell it the client is initialized.
pub async fn initialize_member(
    fed: &Fed<'_>,
    index: usize,
    version: &str,
    client: &Value,
) -> Result<MemberSession, GatewayError> {
    let (ms, _) = member_init(fed, index, version, client).await?;
    let body = Bytes::from_static(br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);
    let call = Call::in_session(&ms, body);
    let member = &fed.vs().members[index];
    member::send_and_forget(&fed.req.client, member, call).await;
    fed.member_ok(index);
    Ok(ms)
}

/// `initialize` sent to one member: its part of the session and its result.
async fn member_init(
    fed: &Fed<'_>,
    index: usize,
    version: &str,
    client: &Value,
) -> Result<(MemberSession, Value), GatewayError> {
    let member = &fed.vs().members[index];
    let id = super::serve::own_id("initialize");
    let message = json!({
        "jsonrpc": "2.0",
        "id": id,
        "method": "initialize",
        "params": {
            "protocolVersion": version,
            "capabilities": client.get("capabilities").cloned().unwrap_or_else(|| json!({})),
            "clientInfo": client.get("clientInfo").cloned().unwrap_or_else(|| json!({})),
        },
    });
    let call = Call {
        body: Bytes::from(serde_json::to_vec(&message).expect("JSON serializes")),
        ..Default::default()
    };
    let reply = member::send(&fed.req.client, member, call).await?;
    let status = reply.status;
    let session = reply.session.clone();
    let server = reply.server.id.clone();
    let response = response_of(reply.body, &id).await?;
    let refused = |why: String| GatewayError::UpstreamFailed {
        group: member.group.name.clone(),
        server: server.clone(),
        detail: why,
    };
    let Some(response) = response else {
        return Err(refused(format!(
            "initialize: HTTP {status} without a JSON-RPC answer"
        )));
    };
    let Some(result) = response.get("result") else {
        return Err(refused(format!(
            "initialize refused: {}",
            response["error"]
        )));
    };
    let ms = MemberSession {
        server: server.clone(),
        session,
        version: result
            .get("protocolVersion")
            .and_then(Value::as_str)
            .unwrap_or(version)
            .to_string(),
        caps: Caps::of(result.get("capabilities").unwrap_or(&Value::Null)),
    };
    Ok((ms, result.clone()))
}

/// The modern `server/discover`: every member asked, the versions all support.
pub async fn discover<'a>(
    fed: &mut Fed<'a>,
    id: &Value,
    message: &Value,
) -> Result<Answer<'a>, GatewayError> {
    let started = Instant::now();
    let vs = fed.vs();
    let fed_ref = &*fed;
    let asks = (0..vs.members.len()).map(|i| {
        let mut own = message.clone();
        let own_id = super::serve::own_id("discover");
        own["id"] = own_id.clone();
        let body = Bytes::from(serde_json::to_vec(&own).expect("JSON serializes"));
        async move {
            let reply = fed_ref.send_once(i, body, "server/discover").await?;
            let status = reply.status;
            match response_of(reply.body, &own_id).await? {
                Some(r) if r.get("result").is_some() => Ok(r["result"].clone()),
                Some(r) => Err(GatewayError::InvalidRequest(format!(
                    "it refused server/discover: {}",
                    r["error"]
                ))),
                None => Err(GatewayError::InvalidRequest(format!(
                    "it answered server/discover with HTTP {status} and no JSON-RPC answer"
                ))),
            }
        }
    });
    let results = futures::future::join_all(asks).await;
    let mut versions: Option<Vec<String>> = None;
    let mut bits = 0u16;
    let mut instructions = Vec::new();
    let mut answered = 0;
    let mut failed = None;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(result) => {
                fed.member_ok(i);
                answered += 1;
                let theirs: Vec<String> = result
                    .get("supportedVersions")
                    .and_then(Value::as_array)
                    .map(|a| {
                        a.iter()
                            .filter_map(Value::as_str)
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                versions = Some(match versions {
                    None => theirs,
                    Some(v) => v.into_iter().filter(|x| theirs.contains(x)).collect(),
                });
                bits |= Caps::of(result.get("capabilities").unwrap_or(&Value::Null));
                if let Some(text) = result.get("instructions").and_then(Value::as_str) {
                    instructions.push(format!("## {}\n{text}", vs.members[i].prefix));
                }
            }
            Err(e) => {
                fed.member_failed(i, "discover", &e)?;
                failed = Some(e);
            }
        }
    }
    if answered == 0 {
        return Err(failed.unwrap_or_else(|| GatewayError::Internal("no members".into())));
    }
    let mut result = json!({
        "supportedVersions": versions.unwrap_or_default(),
        "capabilities": Caps::object(bits),
        "resultType": "complete",
        "cacheScope": "private",
        "ttlMs": 0,
        "_meta": {"io.modelcontextprotocol/serverInfo": {"name": vs.name, "version": env!("CARGO_PKG_VERSION")}},
    });
    if !instructions.is_empty() {
        result["instructions"] = Value::String(instructions.join("\n\n"));
    }
    metrics::histogram(
        &METRICS.federation_fan_out_duration,
        &[&vs.path, "server/discover"],
    )
    .observe(started.elapsed().as_secs_f64());
    Ok(Answer::Json {
        status: 200,
        body: rpc_result(id, result),
    })
}
