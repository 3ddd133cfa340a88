//! Distributed tracing: W3C `traceparent` continued through the gateway, one span per
//! request exported over OTLP/HTTP (JSON) with the OpenTelemetry SDK.
//!
//! With `tracing.otlp_endpoint` unset nothing is created and `traceparent`/`tracestate`
//! pass through untouched like any other header. With it set, each request gets a server
//! span named `<mcp method>` (or `<HTTP method> <route>`), a child of the client's
//! `traceparent` when there is a valid one, sampled by `sample_ratio` (parent-based: a
//! sampled parent is always followed); the upstream request carries a `traceparent`
//! naming the gateway's span. Attributes: `mcp.method.name`, `gen_ai.tool.name` /
//! `mcp.resource.uri`, `mcp.protocol.era`, `mcp.session.id` (a SHA-256 prefix of the
//! sealed id, never the id itself), `jsonrpc.request.id`, `http.request.method`,
//! `url.path`, `http.route`, `http.response.status_code`, `mcp.gateway.group`,
//! `mcp.gateway.server`, `error.type`.
//!
//! The exporter (a batch processor with its own thread) starts on first use, inside the
//! worker process (after `-d` forked), and ships spans every second.

use crate::config::TracingConfig;
use once_cell::sync::OnceCell;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, SpanKind, Status, TraceContextExt, Tracer as _};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span,
};
use opentelemetry_sdk::Resource;
use std::time::Duration;

/// The settings, recorded at start; the exporter is built from them on first use.
static SETTINGS: OnceCell<TracingConfig> = OnceCell::new();
static TRACER: OnceCell<Option<(SdkTracerProvider, SdkTracer)>> = OnceCell::new();

/// Remember the tracing settings (no thread or connection is started here).
pub fn configure(cfg: &TracingConfig) {
    if cfg.otlp_endpoint.as_deref().is_some_and(|e| !e.is_empty()) {
        let _ = SETTINGS.set(cfg.clone());
    }
}

/// Ship the spans still buffered (before the process exits).
pub fn shutdown() {
    if let Some(Some((provider, _))) = TRACER.get() {
        if let Err(e) = provider.shutdown() {
            log::warn!("tracing: flushing spans at exit failed: {e}");
        }
    }
}

/// The OTLP/HTTP traces URL: a bare `scheme://host:port` gets `/v1/traces`.
pub fn traces_url(endpoint: &str) -> String {
    let endpoint = endpoint.trim_end_matches('/');
    match endpoint.split_once("://") {
        Some((_, rest)) if rest.contains('/') => endpoint.to_string(),
        _ => format!("{endpoint}/v1/traces"),
    }
}

/// Is tracing configured? (Cheap: the request path asks before building anything.)
pub fn enabled() -> bool {
    SETTINGS.get().is_some()
}

fn tracer() -> Option<&'static SdkTracer> {
    TRACER
        .get_or_init(|| {
            let cfg = SETTINGS.get()?;
            let endpoint = traces_url(cfg.otlp_endpoint.as_deref()?);
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(Protocol::HttpJson)
                .with_endpoint(endpoint.clone())
                .with_timeout(Duration::from_secs(5))
                .build()
                .map_err(|e| log::error!("tracing: cannot export to {endpoint}: {e}"))
                .ok()?;
            let batch = BatchSpanProcessor::builder(exporter)
                .with_batch_config(
                    BatchConfigBuilder::default()
                        .with_scheduled_delay(Duration::from_secs(1))
                        .build(),
                )
                .build();
            let provider = SdkTracerProvider::builder()
                .with_span_processor(batch)
                .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                    cfg.sample_ratio,
                ))))
                .with_resource(
                    Resource::builder()
                        .with_service_name(cfg.service_name.clone())
                        .build(),
                )
                .build();
            log::info!("tracing: exporting spans to {endpoint}");
            let tracer = opentelemetry::trace::TracerProvider::tracer(&provider, "mcp-gateway");
            Some((provider, tracer))
        })
        .as_ref()
        .map(|(_, t)| t)
}

struct HeaderExtractor<'a>(&'a http::HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Collects the headers a propagator writes.
#[derive(Default)]
struct Collected(Vec<(String, String)>);

impl Injector for Collected {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

/// One request's span and the context to send upstream.
pub struct RequestSpan {
    span: Span,
    cx: Context,
}

impl RequestSpan {
    /// Start a span for a request (`None` when tracing is off), continuing the client's
    /// `traceparent` when it is valid.
    pub fn start(name: String, headers: &http::HeaderMap) -> Option<RequestSpan> {
        let tracer = tracer()?;
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        let cx = parent.with_remote_span_context(span.span_context().clone());
        Some(RequestSpan { span, cx })
    }

    pub fn set(&mut self, kv: KeyValue) {
        self.span.set_attribute(kv);
    }

    pub fn set_name(&mut self, name: String) {
        self.span.update_name(name);
    }

    /// `traceparent` (and `tracestate`) naming this span, for the upstream request.
    pub fn upstream_headers(&self) -> Vec<(String, String)> {
        let mut out = Collected::default();
        TraceContextPropagator::new().inject_context(&self.cx, &mut out);
        out.0
    }

    pub fn end(mut self, error: Option<&str>) {
        if let Some(e) = error {
            self.span
                .set_attribute(KeyValue::new("error.type", e.to_string()));
            self.span.set_status(Status::error(e.to_string()));
        }
        self.span.end();
    }
}

/// A short, non-reversible handle for a session id (correlates spans of one session
/// without putting the id, a bearer of the session, in the trace).
pub fn session_handle(sealed: &str) -> String {
    use sha2::{Digest, Sha256};
    Sha256::digest(sealed.as_bytes())
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_url_appends_the_signal_path_to_a_bare_endpoint() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/"), "http://c:4318/v1/traces");
        assert_eq!(
            traces_url("http://c:4318/custom/traces"),
            "http://c:4318/custom/traces"
        );
    }

    #[test]
    fn session_handles_are_stable_and_short() {
        assert_eq!(session_handle("abc"), session_handle("abc"));
        assert_ne!(session_handle("abc"), session_handle("abd"));
        assert_eq!(session_handle("abc").len(), 16);
    }
}
