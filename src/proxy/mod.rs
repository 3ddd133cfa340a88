//! The proxy service: `impl ProxyHttp for Gateway`. Each hook calls one function.
//!
//! HTTP/1 POSTs, GET streams and DELETEs are served by the gateway's own connection
//! loop ([`serve`]), which calls these same hooks without Pingora's per-request proxy
//! future; everything else (HTTP/2, WebSocket upgrades, a legacy SSE client's
//! endpoints, other methods) runs through Pingora's HTTP app. Phase order for one
//! request:
//! 0. `early_request_filter`: an HTTP/2 stream finds its client connection
//!    ([`ctx::RequestCtx::find_conn`]).
//! 1. `request_filter` ([`request::filter`]): health probes; route → connection fields
//!    ([`hop_by_hop::check_request`]: no `Upgrade`) → method → `100 Continue` → body
//!    (bounded) → JSON-RPC inspection → modern header check → sealed session. A request
//!    read and checked (a POST, a GET stream, a DELETE) is then forwarded from here by
//!    [`relay`] (the gateway's own upstream exchange: head and body in one write, the
//!    server chosen by [`forward::select`], the request shaped by
//!    [`forward::upstream_request`], the answer by [`forward::client_response`]) and its
//!    answer relayed. A virtual server's requests (all methods) are answered by
//!    [`federated`] instead.
//!
//! The phases below are Pingora's proxy path, which carries only what a WebSocket or
//! legacy SSE client's request becomes once checked: a request to the gateway's own
//! adapter ([`clients`]), which sends each of its messages back in as a POST on the
//! internal listener.
//! 2. `upstream_peer`: the adapter's socket ([`clients::peer`]).
//! 3. `upstream_request_filter` ([`clients::adapter_request`]): the caller's ticket, no
//!    credentials.
//! 4. `upstream_response_filter`: a `101` becomes a 502 but the adapter's to a WebSocket
//!    client. `response_filter` ([`forward::client_response`]): no hop-by-hop fields, the
//!    request id.
//! 5. `fail_to_proxy`: failures become JSON-RPC errors (502/503/504).
//! 6. `logging`: the access log line (every request, on either path).

pub mod admission;
pub mod cache;
pub mod clients;
pub mod connections;
pub mod ctx;
pub mod federated;
pub mod forward;
pub mod framing;
pub mod health;
pub mod hop_by_hop;
pub mod list_filter;
pub mod outcome;
pub mod record;
pub mod relay;
pub mod request;
pub mod respond;
pub mod serve;
pub mod transform;

use crate::error::GatewayError;
use crate::upstream::pool::Connector;
use async_trait::async_trait;
use ctx::RequestCtx;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::prelude::*;
use pingora::proxy::{FailToProxy, ProxyHttp, Session};
use pingora::upstreams::peer::HttpPeer;
use std::sync::Arc;

#[derive(Clone)]
pub struct Gateway {
    /// The running state; each request takes the one current when it starts.
    pub live: Arc<crate::live::Live>,
    /// Upstream connections for the requests the gateway forwards itself ([`relay`]), the
    /// idle ones kept per worker thread (a clone shares them).
    pub connector: Connector,
}

impl Gateway {
    /// `pool_size`: the idle upstream connections each worker thread keeps.
    pub fn new(live: Arc<crate::live::Live>, pool_size: usize) -> Self {
        Gateway {
            live,
            connector: Connector::new(pool_size),
        }
    }
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx::new(&self.live)
    }

    /// No downstream modules: Pingora's default adds a disabled response-compression
    /// module, built (and allocated) for every request although it never compresses.
    fn init_downstream_modules(&self, _modules: &mut pingora::modules::http::HttpModules) {}

    async fn early_request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.find_conn(session);
        // Requests a client sends before reading the previous answer (HTTP/1.1
        // pipelining) are served in turn; without this Pingora drops them with the
        // bytes read past the body.
        session.as_downstream_mut().set_pipelining_enabled(true);
        Ok(())
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        request::filter(self, session, ctx).await
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        match ctx.downstream {
            Some(_) => clients::peer(),
            // Every other request is answered from `request_filter` (`relay`).
            None => Err(Error::explain(
                ErrorType::InternalError,
                "a request other than the client adapter's reached Pingora's proxy path",
            )),
        }
    }

    async fn upstream_request_filter(
        &self,
        _session: &mut Session,
        req: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        match &ctx.downstream {
            Some(ticket) => clients::adapter_request(req, ticket),
            None => Ok(()),
        }
    }

    async fn upstream_response_filter(
        &self,
        _session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let websocket = ctx
            .downstream
            .as_ref()
            .is_some_and(|t| t.kind == crate::transport::clients::Kind::WebSocket);
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS && !websocket {
            // Only a WebSocket client's request is switched (by the gateway's own
            // adapter): the gateway does not tunnel what it cannot inspect.
            let err = hop_by_hop::switched_protocols(ctx);
            let status = err.status_and_code().0;
            ctx.error = Some(err);
            return Err(Error::new(ErrorType::HTTPStatus(status)));
        }
        if !resp.status.is_informational() {
            ctx.upstream_status = Some(resp.status.as_u16());
        }
        Ok(())
    }

    async fn response_filter(
        &self,
        session: &mut Session,
        resp: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        if self.live.draining() {
            // As `respond::head` does for the answers the gateway writes itself.
            session.set_keepalive(None);
        }
        if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
            // The adapter's answer to a WebSocket client (no other 101 gets here): its
            // `Upgrade` and `Connection` are the switch itself.
            respond::common_headers(resp, ctx)?;
            return Ok(());
        }
        if resp.status.is_informational() {
            // Relayed as it is.
            respond::edit_response(resp, |parts| hop_by_hop::strip_response(&mut parts.headers));
            return Ok(());
        }
        forward::client_response(resp, ctx)?;
        forward::count_sse(resp, ctx);
        forward::filter_list(resp, ctx, false)?;
        cache::watch(ctx, resp);
        Ok(())
    }

    fn response_body_filter(
        &self,
        _session: &mut Session,
        body: &mut Option<bytes::Bytes>,
        end_of_stream: bool,
        ctx: &mut RequestCtx,
    ) -> Result<Option<std::time::Duration>> {
        if let Some(chunk) = body.as_deref() {
            cache::watch_chunk(ctx, chunk);
        }
        if let Some(filter) = ctx.list_filter.as_mut() {
            let caller = list_filter::Caller {
                policies: &ctx.state.policies,
                identity: ctx.identity.as_ref(),
                route: ctx.route.as_deref().unwrap_or_default(),
                transforms: ctx.transforms.as_deref(),
            };
            filter.chunk(&caller, body, end_of_stream);
        }
        Ok(None)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        if client_gone(e) {
            ctx.error = Some(GatewayError::ClientClosed);
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        let err = ctx.error.take().unwrap_or_else(|| upstream_error(e, ctx));
        let status = err.status_and_code().0;
        if respond::final_response_written(session).is_some() {
            // Headers already went out: all we can do is end the response.
            ctx.error = Some(err);
            return FailToProxy {
                error_code: 0,
                can_reuse_downstream: false,
            };
        }
        // The connection is not reused after a proxy failure: say so, so clients do not
        // send their next request into a closing socket.
        session.set_keepalive(None);
        if let Err(write_err) = respond::error(session, ctx, err).await {
            log::debug!(
                "request {}: could not send the error response: {write_err}",
                ctx.request_id
            );
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }

    fn suppress_error_log(&self, _session: &Session, _ctx: &RequestCtx, e: &Error) -> bool {
        // A client that hangs up is routine (and, in the modern era, a cancellation).
        client_gone(e)
    }

    async fn logging(&self, session: &mut Session, e: Option<&Error>, ctx: &mut RequestCtx) {
        if self.live.draining() {
            // An answer that began before the drain: its connection closes now rather
            // than wait for a next request the listeners no longer take.
            session.set_keepalive(None);
        }
        outcome::record_end(ctx, e);
        record::request_end(session, ctx);
        if ctx.span.is_some() {
            record::span_end(session, ctx, e);
        }
        if ctx.state.access_log {
            record::access_log(session, e, ctx);
        }
    }
}

fn client_gone(e: &Error) -> bool {
    matches!(e.esource(), ErrorSource::Downstream)
        && matches!(
            e.etype(),
            ErrorType::WriteError | ErrorType::ReadError | ErrorType::ConnectionClosed
        )
}

/// Turn a Pingora proxying error into the gateway's error, naming the group and server.
fn upstream_error(e: &Error, ctx: &RequestCtx) -> GatewayError {
    let group = ctx.group.as_ref().map_or("", |g| g.name.as_str());
    let server = ctx.server().map_or("", |s| s.id.as_str());
    let detail = e.to_string();
    let upstream = matches!(e.esource(), ErrorSource::Upstream)
        || matches!(
            e.etype(),
            ErrorType::ConnectTimedout
                | ErrorType::ReadTimedout
                | ErrorType::WriteTimedout
                | ErrorType::HTTPStatus(_)
        );
    if upstream {
        // Named as the exchange names its failures: a timeout, or any other failure.
        crate::upstream::exchange::failure_named(group, server, e, detail)
    } else if matches!(e.esource(), ErrorSource::Downstream) {
        GatewayError::BodyRead(detail)
    } else {
        GatewayError::Internal(detail)
    }
}
