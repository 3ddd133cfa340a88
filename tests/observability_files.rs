//! The observability files under docker/: the Prometheus alert rules and scrape config
//! (checked by promtool), the Grafana dashboard (every metric it queries exists on a
//! live gateway's /metrics, every query is valid PromQL), and the live /metrics output
//! itself (`promtool check metrics`).
//!
//! promtool comes with Debian's `prometheus` package, which `scripts/test` installs.

mod common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const ALERTS: &str = "docker/prometheus/alerts.yml";
const PROMETHEUS: &str = "docker/prometheus/prometheus.yml";
const DASHBOARD: &str = "docker/grafana/dashboards/mcp-gateway.json";

const INIT: &str = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
const LIST: &str = r#"{"jsonrpc":"2.0","id":2,"method":"tools/list"}"#;
const CALL: &str =
    r#"{"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo","arguments":{}}}"#;
const STREAM: &str = r#"{"jsonrpc":"2.0","id":4,"method":"tools/call","params":{"name":"stream","arguments":{"delay":0.1}}}"#;
const BAD_JSON: &str = r#"{"jsonrpc":"2.0", bad"#;

/// Run promtool with `args` in `dir`, feeding it `stdin`; fails clearly when promtool
/// is not installed.
fn promtool(dir: &Path, args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run promtool ({e}): it comes with Debian's `prometheus` package; \
                 run scripts/test, which installs it"
            )
        });
    if let Some(input) = stdin {
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    child.wait_with_output().unwrap()
}

/// promtool's output, for assertion messages.
fn said(out: &Output) -> String {
    format!(
        "promtool exited with {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn yaml(path: &str) -> serde_yaml_ng::Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(repo().join(path)).unwrap())
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn alert_rules_pass_promtool() {
    let out = promtool(&repo(), &["check", "rules", ALERTS], None);
    assert!(out.status.success(), "{}", said(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("SUCCESS: 6 rules found"),
        "{}",
        said(&out)
    );

    // The six alerts, each with what it fires on, how long, and both annotations.
    let doc = yaml(ALERTS);
    let rules: Vec<&serde_yaml_ng::Value> = doc["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap())
        .collect();
    for (alert, needle, duration) in [
        ("McpGatewayDown", r#"up{job="mcp-gateway"} == 0"#, "1m"),
        ("McpGatewayHighErrorRate", "> 0.05", "5m"),
        (
            "McpGatewayUpstreamUnhealthy",
            "mcp_gateway_upstream_up{",
            "1m",
        ),
        (
            "McpGatewayCircuitBreakerOpen",
            "mcp_gateway_circuit_breaker_state{",
            "1m",
        ),
        (
            "McpGatewayRateLimitsNotShared",
            r#"mcp_gateway_rate_limit_backend_up{job="mcp-gateway", backend="redis"} == 0"#,
            "2m",
        ),
        (
            "McpGatewayCacheNotShared",
            r#"mcp_gateway_cache_redis_up{job="mcp-gateway", backend="redis"} == 0"#,
            "2m",
        ),
    ] {
        let rule = rules
            .iter()
            .find(|r| r["alert"].as_str() == Some(alert))
            .unwrap_or_else(|| panic!("no alert {alert} in {ALERTS}"));
        let expr = rule["expr"].as_str().unwrap();
        assert!(expr.contains(needle), "{alert}: {needle:?} not in {expr:?}");
        assert_eq!(rule["for"].as_str(), Some(duration), "{alert}");
        for key in ["summary", "description"] {
            assert!(
                rule["annotations"][key]
                    .as_str()
                    .is_some_and(|s| !s.trim().is_empty()),
                "{alert} lacks the {key} annotation"
            );
        }
    }
    let errors = rules
        .iter()
        .find(|r| r["alert"].as_str() == Some("McpGatewayHighErrorRate"))
        .unwrap()["expr"]
        .as_str()
        .unwrap();
    assert!(
        errors.contains("mcp_gateway_requests_total") && errors.contains(r#"status=~"5..""#),
        "{errors}"
    );
}

#[test]
fn prometheus_config_passes_promtool() {
    // From another directory: the rule file is found relative to the config file.
    let elsewhere = TempDir::new("promtool");
    let config = repo().join(PROMETHEUS);
    let out = promtool(
        &elsewhere.0,
        &["check", "config", config.to_str().unwrap()],
        None,
    );
    assert!(out.status.success(), "{}", said(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("SUCCESS: 1 rule files found"),
        "{}",
        said(&out)
    );
    assert!(text.contains("alerts.yml"), "{}", said(&out));

    let doc = yaml(PROMETHEUS);
    let job = doc["scrape_configs"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|j| j["job_name"].as_str() == Some("mcp-gateway"))
        .expect("a scrape config for job mcp-gateway");
    // /metrics is Prometheus' default path; when it is set, it must be /metrics.
    assert!(
        matches!(job["metrics_path"].as_str(), None | Some("/metrics")),
        "{job:?}"
    );
    let targets = job["static_configs"][0]["targets"].as_sequence().unwrap();
    assert!(
        targets
            .iter()
            .all(|t| t.as_str().is_some_and(|t| t.ends_with(":9090"))),
        "targets should be the admin port (9090 by default): {targets:?}"
    );
}

/// A gateway in front of a mock upstream with health checks, after a session start, a
/// `tools/list`, two `tools/call` (one answered with SSE) and a body that is not JSON:
/// its `/metrics` text.
async fn live_metrics() -> String {
    let up = Upstream::start("a");
    let check =
        "      health_check: {kind: mcp, interval: 500ms, timeout: 300ms}\n      servers:\n";
    let yaml = config_for(&[up.url()], "").replacen("      servers:\n", check, 1);
    let gw = Gateway::start(&yaml).await;
    let c = client();
    let url = gw.url("/mcp");

    let r = post(&c, &url, INIT).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("mcp-session-id"));
    received(post(&c, &url, LIST).send().await.unwrap()).await;
    received(post(&c, &url, CALL).send().await.unwrap()).await;
    let r = post(&c, &url, STREAM).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let events = r.text().await.unwrap();
    assert!(events.contains(r#""id": 4"#), "{events}");
    expect_refusal(post(&c, &url, BAD_JSON), 400, -32700).await;

    // Counters are updated when a request's logging is done: wait for the last one.
    let mut text = String::new();
    for _ in 0..100 {
        let r = reqwest::get(gw.admin_url("/metrics")).await.unwrap();
        assert_eq!(r.status(), 200);
        let kind = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(kind.starts_with("text/plain"), "{kind}");
        text = r.text().await.unwrap();
        if text.contains("mcp_gateway_errors_total{") && text.contains(r#"tool="stream""#) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    text
}

/// The metric families a `/metrics` text declares (`# TYPE name kind`).
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `mcp_gateway_*` name in `s`, with the `_bucket`, `_count` and `_sum` series of
/// a histogram folded into the family name.
fn metric_names(s: &str, into: &mut BTreeSet<String>) {
    const PREFIX: &str = "mcp_gateway_";
    let mut rest = s;
    while let Some(at) = rest.find(PREFIX) {
        let tail = &rest[at..];
        let end = tail
            .find(|ch: char| !(ch.is_ascii_lowercase() || ch == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let family = ["_bucket", "_count", "_sum"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix))
            .unwrap_or(name);
        into.insert(family.to_string());
        rest = &tail[end..];
    }
}

/// Every panel of the dashboard, those nested in rows included.
fn panels(list: &Value, into: &mut Vec<Value>) {
    for p in list.as_array().into_iter().flatten() {
        into.push(p.clone());
        panels(&p["panels"], into);
    }
}

/// A query with Grafana's variables replaced, so that promtool can parse it.
fn as_promql(expr: &str) -> String {
    expr.replace("$__rate_interval", "5m")
        .replace("$__interval", "1m")
        .replace("$__range", "1h")
        .replace("$instance", ".*")
        .replace("$group", ".*")
        .replace("$route", ".*")
}

#[tokio::test]
async fn dashboard_queries_only_metrics_the_gateway_exports() {
    let text = std::fs::read_to_string(repo().join(DASHBOARD)).unwrap();
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));
    let schema = dashboard["schemaVersion"].as_u64().unwrap();
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");
    let vars: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for var in ["DS_PROMETHEUS", "group", "route"] {
        assert!(vars.contains(&var), "no ${var} variable: {vars:?}");
    }

    let mut all = Vec::new();
    panels(&dashboard["panels"], &mut all);
    let mut exprs = Vec::new();
    for p in &all {
        let title = p["title"].as_str().unwrap_or_default().to_string();
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(
            p["datasource"]["uid"], "${DS_PROMETHEUS}",
            "panel {title:?} does not use the data source variable"
        );
        let targets = p["targets"].as_array();
        assert!(
            targets.is_some_and(|t| !t.is_empty()),
            "panel {title:?} has no queries"
        );
        for t in targets.into_iter().flatten() {
            let expr = t["expr"].as_str().unwrap_or_default();
            assert!(!expr.trim().is_empty(), "panel {title:?}: empty query {t}");
            exprs.push((title.clone(), expr.to_string()));
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");

    let mut used = BTreeSet::new();
    for (_, expr) in &exprs {
        metric_names(expr, &mut used);
    }
    // Variable queries (label_values(...)) name metrics too.
    for v in dashboard["templating"]["list"].as_array().unwrap() {
        metric_names(&v["query"].to_string(), &mut used);
        metric_names(&v["definition"].to_string(), &mut used);
    }
    for family in [
        "mcp_gateway_requests_total",
        "mcp_gateway_request_duration_seconds",
        "mcp_gateway_errors_total",
        "mcp_gateway_tool_calls_total",
        "mcp_gateway_connections_active",
        "mcp_gateway_sse_streams_active",
        "mcp_gateway_sessions_total",
        "mcp_gateway_upstream_requests_total",
        "mcp_gateway_upstream_health_checks_total",
        "mcp_gateway_upstream_up",
        "mcp_gateway_circuit_breaker_state",
    ] {
        assert!(
            used.contains(family),
            "the dashboard does not show {family}"
        );
    }

    let metrics = live_metrics().await;
    let exported = families(&metrics);
    let unknown: Vec<&String> = used.iter().filter(|m| !exported.contains(*m)).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard queries metrics the gateway does not export: {unknown:?}\n\
         exported: {exported:?}"
    );

    // Every query is valid PromQL: promtool parses them as recording rules.
    let dir = TempDir::new("dashboard-promql");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (title, expr)) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      # {title}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            serde_json::to_string(&as_promql(expr)).unwrap()
        ));
    }
    std::fs::write(dir.path("dashboard.yml"), &rules).unwrap();
    let out = promtool(&dir.0, &["check", "rules", "dashboard.yml"], None);
    assert!(out.status.success(), "{}\nrules:\n{rules}", said(&out));
}

#[tokio::test]
async fn live_metrics_pass_promtool_check_metrics() {
    let metrics = live_metrics().await;
    let exported = families(&metrics);
    assert!(exported.len() >= 13, "{metrics}");
    let out = promtool(&repo(), &["check", "metrics"], Some(metrics.as_bytes()));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{}\nmetrics:\n{metrics}",
        said(&out)
    );
}
