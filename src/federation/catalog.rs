//! The merged lists: `tools/list`, `prompts/list`, `resources/list` and
//! `resources/templates/list` asked of every member that has the capability, at once;
//! items named for the catalog ([`super::names`]), the tool filters applied, merged in
//! config order, then filtered by the caller's policies.
//!
//! Paging: a first request (no cursor) follows each member's `nextCursor` itself and
//! answers the whole merged list in one page when it fits `max_page_size` (many clients
//! never follow `nextCursor`). A larger catalog is answered one member page at a time,
//! under a sealed cursor holding the list, the catalog generation, the member and the
//! member's own cursor; a tampered or stale cursor is `-32602`.

use super::fan::response_of;
use super::handshake::Caps;
use super::member::Body;
use super::names;
use super::serve::{Answer, Fed, INVALID_PARAMS};
use super::token::Cursor;
use crate::cache::ask::Looked;
use crate::error::GatewayError;
use crate::security::policy::ListKind;
use crate::telemetry::metrics::{self, METRICS};
use bytes::Bytes;
use serde_json::{json, Value};
use std::time::Instant;

/// Pages followed per member for the one-page answer.
const MAX_PAGES: usize = 64;
/// The spec's longest tool name; longer prefixed names are left out.
const MAX_NAME: usize = 128;
/// Names longer than this work but many clients truncate them: a warning.
const LONG_NAME: usize = 64;

/// One member's page of a list.
struct Page {
    items: Vec<Value>,
    next: Option<String>,
    /// The size of the member's answer (for the page-size budget; the prefixes add a few
    /// bytes per item).
    size: usize,
}

pub async fn list<'a>(
    fed: &mut Fed<'a>,
    method: &str,
    id: &Value,
    message: &Value,
) -> Result<Answer<'a>, GatewayError> {
    let started = Instant::now();
    let vs = fed.vs();
    let kind = ListKind::of(method).expect("a list method");
    let cursor = message
        .get("params")
        .and_then(|p| p.get("cursor"))
        .and_then(Value::as_str);
    let members = fed.members_with(Caps::for_list(method)).await?;
    let answer = match cursor {
        Some(token) => {
            let opened = fed
                .sealer
                .open_cursor(token)
                .filter(|c| c.list == method && c.generation == vs.generation);
            let Some(c) = opened else {
                return Ok(fed.error(
                    id,
                    INVALID_PARAMS,
                    "invalid cursor: it was not issued for this list by this virtual server, was altered, or the catalog changed since (list again without a cursor)".into(),
                    None,
                ));
            };
            page(fed, method, kind, &members, c).await?
        }
        None => match whole(fed, method, kind, &members).await? {
            Some(items) => items,
            None => {
                let first = Cursor {
                    list: method.to_string(),
                    generation: vs.generation,
                    member: 0,
                    cursor: None,
                };
                page(fed, method, kind, &members, first).await?
            }
        },
    };
    let (items, next) = answer;
    let mut result = json!({ kind.key(): items });
    if let Some(n) = next {
        result["nextCursor"] = Value::String(fed.sealer.cursor(&n));
    }
    if fed.req.modern {
        // Filtered per caller: private, and not to be cached unless an operator says so.
        result["cacheScope"] = json!("private");
        result["ttlMs"] = json!(0);
        result["resultType"] = json!("complete");
    }
    let mut message = json!({"jsonrpc": "2.0", "id": id, "result": result});
    let state = fed.req.client.state;
    if !state.policies.is_empty() {
        state
            .policies
            .filter_list(fed.req.client.identity, &vs.path, kind, &mut message);
    }
    metrics::histogram(&METRICS.federation_fan_out_duration, &[&vs.path, method])
        .observe(started.elapsed().as_secs_f64());
    Ok(Answer::Json {
        status: 200,
        body: serde_json::to_vec(&message)
            .expect("JSON serializes")
            .into(),
    })
}

/// Every page of member `index`'s list while the answers fit `budget`: its items,
/// whether they are all of them, and their size.
async fn member_whole(
    fed: &Fed<'_>,
    index: usize,
    method: &str,
    budget: usize,
) -> Result<(Vec<Value>, bool, usize), (usize, GatewayError)> {
    let mut items = Vec::new();
    let mut size = 0;
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let Some(p) = fed.page(index, method, cursor.as_deref()).await? else {
            return Ok((items, true, size));
        };
        size += p.size;
        items.extend(p.items);
        match p.next {
            Some(n) if size <= budget => cursor = Some(n),
            Some(_) => return Ok((items, false, size)),
            None => return Ok((items, true, size)),
        }
    }
    Ok((items, false, size))
}

/// The whole merged list, if it fits one page.
async fn whole(
    fed: &mut Fed<'_>,
    method: &str,
    kind: ListKind,
    members: &[usize],
) -> Result<Option<(Vec<Value>, Option<Cursor>)>, GatewayError> {
    let vs = fed.vs();
    let budget = vs.max_page_size;
    let fed_ref = &*fed;
    let all = members
        .iter()
        .map(|&i| async move { (i, member_whole(fed_ref, i, method, budget).await) });
    let mut results = futures::future::join_all(all).await;
    // A member that forgot its session is initialized again and asked once more.
    for (i, r) in results.iter_mut() {
        if matches!(r, Err((_, GatewayError::SessionNotFound))) && !fed.session_alive(*i).await {
            // No member knows the session any more: it was ended.
            return Err(GatewayError::SessionNotFound);
        }
        if matches!(
            r,
            Err((
                _,
                GatewayError::SessionNotFound | GatewayError::SessionServerDown(_)
            ))
        ) {
            fed.forget(*i);
            if let Err(e) = fed.member_session(*i).await {
                *r = Err((*i, e));
                continue;
            }
            *r = member_whole(fed, *i, method, budget).await;
        }
    }
    let mut merged = Vec::new();
    let mut size = 0;
    let mut complete = true;
    for (i, r) in results {
        match r {
            Ok((items, done, bytes)) => {
                fed.member_ok(i);
                complete &= done;
                size += bytes;
                let items = present(fed, i, kind, items);
                if done {
                    count(fed, i, kind, items.len());
                }
                merged.extend(items);
            }
            Err((_, e)) => fed.member_failed(i, method, &e)?,
        }
    }
    Ok((complete && size <= budget).then_some((merged, None)))
}

/// One member page, and the cursor of the next (the member's next page, else the next
/// member's first); members that fail are skipped when failing open.
async fn page(
    fed: &mut Fed<'_>,
    method: &str,
    kind: ListKind,
    members: &[usize],
    mut at: Cursor,
) -> Result<(Vec<Value>, Option<Cursor>), GatewayError> {
    loop {
        let Some(&index) = members.iter().find(|&&i| i >= at.member) else {
            return Ok((Vec::new(), None));
        };
        let next_member = |after: usize| {
            members.iter().find(|&&i| i > after).map(|&m| Cursor {
                member: m,
                cursor: None,
                ..at.clone()
            })
        };
        let mut got = fed.page(index, method, at.cursor.as_deref()).await;
        if matches!(
            got,
            Err((
                _,
                GatewayError::SessionNotFound | GatewayError::SessionServerDown(_)
            ))
        ) {
            if matches!(got, Err((_, GatewayError::SessionNotFound)))
                && !fed.session_alive(index).await
            {
                return Err(GatewayError::SessionNotFound);
            }
            // The member forgot its session: initialized again, asked once more.
            fed.forget(index);
            got = match fed.member_session(index).await {
                Ok(_) => fed.page(index, method, at.cursor.as_deref()).await,
                Err(e) => Err((index, e)),
            };
        }
        match got {
            Ok(Some(p)) => {
                fed.member_ok(index);
                let items = present(fed, index, kind, p.items);
                let next = match p.next {
                    Some(c) => Some(Cursor {
                        member: index,
                        cursor: Some(c),
                        ..at.clone()
                    }),
                    None => next_member(index),
                };
                return Ok((items, next));
            }
            Ok(None) => {}
            Err((_, e)) => fed.member_failed(index, method, &e)?,
        }
        match next_member(index) {
            Some(c) => at = c,
            None => return Ok((Vec::new(), None)),
        }
    }
}

impl Fed<'_> {
    /// The members that may serve a list with these capability bits (legacy: from their
    /// `initialize`, initializing those the session lacks; modern: all).
    async fn members_with(&mut self, bits: u16) -> Result<Vec<usize>, GatewayError> {
        let vs = self.vs();
        if self.req.modern {
            return Ok((0..vs.members.len()).collect());
        }
        let mut out = Vec::new();
        for i in 0..vs.members.len() {
            match self.member_session(i).await {
                Ok(ms) if ms.caps & bits != 0 => out.push(i),
                Ok(_) => {}
                Err(e) => self.member_failed(i, "initialize", &e)?,
            }
        }
        Ok(out)
    }

    /// One page of a member's list; `None` when it does not serve the list.
    async fn page(
        &self,
        index: usize,
        method: &str,
        cursor: Option<&str>,
    ) -> Result<Option<Page>, (usize, GatewayError)> {
        let fail = |e| (index, e);
        let mut params = json!({});
        if let Some(c) = cursor {
            params["cursor"] = json!(c);
        }
        if self.req.modern {
            if let Some(meta) = &self.meta {
                params["_meta"] = meta.clone();
            }
        }
        let id = super::serve::own_id("list");
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let body = Bytes::from(serde_json::to_vec(&message).expect("JSON serializes"));
        let fill = match self.cached(index, method, None, &body).await {
            Some(Looked::Hit(entry, _)) => {
                let result = serde_json::from_slice(&entry.result).unwrap_or(Value::Null);
                return Ok(Some(Page::of(method, result, entry.result.len())));
            }
            Some(Looked::Miss(miss)) => Some(miss),
            None => None,
        };
        let reply = self.send_once(index, body, method).await.map_err(fail)?;
        let status = reply.status;
        if status == 404 && !self.req.modern {
            return Err(fail(GatewayError::SessionNotFound));
        }
        // The answer's size, for the page budget: its bytes when it came as JSON.
        let bytes = match &reply.body {
            Body::Json(b) | Body::Other(b) => Some(b.len()),
            Body::Events(_) => None,
        };
        let response = response_of(reply.body, &id).await.map_err(fail)?;
        let Some(mut response) = response else {
            return Err(fail(GatewayError::InvalidRequest(format!(
                "it answered {method} with HTTP {status} and no JSON-RPC answer"
            ))));
        };
        if let Some(error) = response.get("error") {
            if error.get("code").and_then(Value::as_i64) == Some(-32601) {
                // Not a failure: the member has no such list.
                return Ok(None);
            }
            return Err(fail(GatewayError::InvalidRequest(format!(
                "it refused {method}: {error}"
            ))));
        }
        let result = response["result"].take();
        if let Some(miss) = fill {
            if let Some(kept) = crate::cache::entry::keep_value(result.clone()) {
                miss.keep(kept);
            }
        }
        let size = bytes.unwrap_or_else(|| result.to_string().len());
        Ok(Some(Page::of(method, result, size)))
    }
}

impl Page {
    /// The page a member's list `result` is.
    fn of(method: &str, mut result: Value, size: usize) -> Page {
        let key = ListKind::of(method).expect("a list").key();
        let items = match result.get_mut(key).map(Value::take) {
            Some(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Page {
            items,
            next: result
                .get("nextCursor")
                .and_then(Value::as_str)
                .filter(|c| !c.is_empty())
                .map(str::to_string),
            size,
        }
    }
}

/// A member's items as the catalog shows them: named, filtered, URIs prefixed.
fn present(fed: &Fed<'_>, index: usize, kind: ListKind, mut items: Vec<Value>) -> Vec<Value> {
    let vs = fed.vs();
    let member = &vs.members[index];
    if kind == ListKind::Tools {
        // The tool filter names the member's own tools; its transforms then show them.
        items.retain(|t| {
            t.get("name")
                .and_then(Value::as_str)
                .is_some_and(|n| member.tools.allows(n))
        });
        super::transform::tools(fed.req.client.state, member, &mut items);
    }
    let field = match kind {
        ListKind::Tools | ListKind::Prompts => "name",
        ListKind::Resources => "uri",
        ListKind::ResourceTemplates => "uriTemplate",
    };
    items
        .into_iter()
        .filter_map(|mut item| {
            let own = item.get(field)?.as_str()?.to_string();
            let shown = match kind {
                ListKind::Tools => {
                    let name = names::name(vs, index, &own);
                    if name.len() > MAX_NAME {
                        log::warn!(
                            "virtual server {}: tool {name:?} is longer than {MAX_NAME} characters (the spec's limit) and is left out; give member {} a shorter prefix",
                            vs.path,
                            member.prefix
                        );
                        return None;
                    }
                    if name.len() > LONG_NAME && member.status.warn_long_names() {
                        log::warn!(
                            "virtual server {}: tool {name:?} is longer than {LONG_NAME} characters; some clients cut such names (a shorter prefix for member {} helps)",
                            vs.path,
                            member.prefix
                        );
                    }
                    super::rewrite::tool_meta(&member.prefix, &mut item);
                    name
                }
                ListKind::Prompts => names::name(vs, index, &own),
                ListKind::Resources | ListKind::ResourceTemplates => names::uri(&member.prefix, &own),
            };
            item[field] = Value::String(shown);
            Some(item)
        })
        .collect()
}

/// Record how many items a member contributed to a complete list.
fn count(fed: &Fed<'_>, index: usize, kind: ListKind, n: usize) {
    let vs = fed.vs();
    let member = &vs.members[index];
    let (slot, label) = match kind {
        ListKind::Tools => (&member.status.tools, "tools"),
        ListKind::Prompts => (&member.status.prompts, "prompts"),
        ListKind::Resources => (&member.status.resources, "resources"),
        ListKind::ResourceTemplates => return,
    };
    slot.store(n, std::sync::atomic::Ordering::Relaxed);
    METRICS
        .federation_member_items
        .with_label_values(&[vs.path.as_ref(), member.prefix.as_str(), label])
        .set(n as i64);
}

/// `prefix_mode: never`: the member that lists prompt `name` (asked of every member).
pub async fn find_prompt(fed: &mut Fed<'_>, name: &str) -> Result<Option<usize>, GatewayError> {
    let members = fed.members_with(Caps::PROMPTS).await?;
    let mut found = Vec::new();
    for &i in &members {
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            match fed.page(i, "prompts/list", cursor.as_deref()).await {
                Ok(Some(p)) => {
                    if p.items
                        .iter()
                        .any(|it| it.get("name").and_then(Value::as_str) == Some(name))
                    {
                        found.push(i);
                        break;
                    }
                    match p.next {
                        Some(n) => cursor = Some(n),
                        None => break,
                    }
                }
                Ok(None) => break,
                Err((_, e)) => {
                    fed.member_failed(i, "prompts/list", &e)?;
                    break;
                }
            }
        }
    }
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        many => Err(GatewayError::InvalidRequest(format!(
            "prompt {name:?} is served by {} members ({}): with prefix_mode: never its name is ambiguous",
            many.len(),
            many.iter()
                .map(|&i| fed.vs().members[i].prefix.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}
