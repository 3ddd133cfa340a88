//! The route's transforms on the request path (the rules and their order:
//! [`crate::transform`]). A `tools/call` is refused or rewritten here once it was
//! authorized, rate-limited and looked up in the cache; `request_headers` and the
//! modern era's routing headers are set on the request going upstream; answers pass
//! through the list filter, which applies the transforms before the policies.

use super::ctx::RequestCtx;
use crate::error::GatewayError;
use crate::mcp::envelope::Era;
use crate::transform::request::Rewritten;
use crate::upstream::head::Fields;

/// The call this request makes, as the upstream must get it (`None`: as it came).
pub fn plan(ctx: &RequestCtx) -> Result<Option<Rewritten>, GatewayError> {
    let Some(t) = ctx.transforms.as_deref() else {
        return Ok(None);
    };
    let calls = ctx
        .mcp
        .messages()
        .filter(|e| e.method.as_deref() == Some("tools/call"));
    if ctx.mcp.batch_len.is_some() {
        // A batch's calls are forwarded as they came: refuse those a rule would change.
        for e in calls {
            let name = e.name.as_deref().unwrap_or_default();
            if !matches!(t.call(name, br#"{"params":{}}"#), Ok(None)) {
                return Err(GatewayError::InvalidParams(format!(
                    "the tool {name:?} has transforms on this route (transforms): send its \
                     call on its own, not in a batch"
                )));
            }
        }
        return Ok(None);
    }
    let Some(name) = calls.into_iter().next().and_then(|e| e.name.as_deref()) else {
        return Ok(None);
    };
    let body = ctx.body.as_deref().unwrap_or_default();
    t.call(name, body)
        .map_err(|r| GatewayError::InvalidParams(r.message()))
}

/// Forward the rewritten call: its body, and its upstream name for the headers.
pub fn apply(ctx: &mut RequestCtx, rewritten: Rewritten) {
    ctx.body = Some(rewritten.body);
    if let Some(env) = ctx.mcp.envelope.as_mut() {
        env.name = Some(rewritten.name);
    }
    ctx.rewritten_args = Some(rewritten.changed);
}

/// `request_headers`, and after a rewrite the modern era's routing headers from the
/// new body (`Mcp-Name`, and `Mcp-Param-<argument>` of the arguments changed).
pub fn upstream_headers(headers: &mut impl Fields, ctx: &RequestCtx) {
    let Some(t) = ctx.transforms.as_deref() else {
        return;
    };
    crate::upstream::head::request_headers(headers, t);
    let Some(changed) = &ctx.rewritten_args else {
        return;
    };
    if ctx.era() != Some(Era::Modern) {
        return;
    }
    if let Some(env) = ctx.mcp.envelope.as_ref() {
        for (name, value) in crate::mcp::headers::routing(env) {
            headers.insert(name, value);
        }
    }
    for (header, value) in crate::transform::request::param_headers(changed) {
        if headers.get(&header).is_none() {
            continue;
        }
        match value {
            None => {
                headers.remove(&header);
            }
            Some(v) => {
                headers.insert(header, v);
            }
        }
    }
}
