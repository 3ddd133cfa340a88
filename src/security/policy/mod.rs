//! Authorization: ordered allow/deny rules over who calls (subject, client id, scopes,
//! claims) and what (route, JSON-RPC method, tool / prompt / resource name).
//!
//! The first rule whose conditions all hold decides; a request no rule matches is denied
//! (add a last `effect: allow` rule to allow the rest). No rules at all: no
//! authorization, everything is allowed.
//!
//! The same rules filter lists: an item of a `tools/list`, `prompts/list`,
//! `resources/list` or `resources/templates/list` answer is kept only when the caller
//! could call it (`tools/call` of the tool, `prompts/get` of the prompt,
//! `resources/read` of the resource or template), so clients never see what they may
//! not use.
//!
//! This module owns what a request does ([`Action`]), the decision ([`Policies::check`])
//! and its denial; `compile` builds the rules from the config, `rule` matches one rule
//! against a request, `lists` filters list answers.

mod compile;
mod lists;
mod rule;

pub use lists::ListKind;

use super::auth::Identity;
use crate::config::Effect;
use crate::mcp::envelope::{Envelope, Names};
use rule::{Fit, Rule};

/// What a request does, as far as policies are concerned.
#[derive(Debug, Clone, Copy)]
pub struct Action<'a> {
    pub route: &'a str,
    /// The JSON-RPC method; `None` for a GET stream, a DELETE, or a client's response.
    pub method: Option<&'a str>,
    /// The tool, prompt or resource the method names.
    pub item: Option<Item<'a>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item<'a> {
    Tool(&'a str),
    Prompt(&'a str),
    Resource(&'a str),
}

impl<'a> Action<'a> {
    /// The action of a message (`None`: a GET stream or a DELETE): its method, and the
    /// item it names as the envelope read it from the field that method defines
    /// (`params.uri` for `resources/*`, `params.ref` for `completion/complete`).
    pub fn of_message(route: &'a str, message: Option<&'a Envelope>) -> Action<'a> {
        let Some(env) = message else {
            return Action {
                route,
                method: None,
                item: None,
            };
        };
        let item = match (env.names, env.name.as_deref()) {
            (Some(Names::Tool), Some(n)) => Some(Item::Tool(n)),
            (Some(Names::Prompt), Some(n)) => Some(Item::Prompt(n)),
            (Some(Names::Resource), Some(n)) => Some(Item::Resource(n)),
            _ => None,
        };
        Action {
            route,
            method: env.method.as_deref(),
            item,
        }
    }

    /// The action of using a listed item: `name` is what `method` names.
    pub fn of(route: &'a str, method: Option<&'a str>, name: Option<&'a str>) -> Action<'a> {
        let item = match (method, name) {
            (Some("tools/call"), Some(n)) => Some(Item::Tool(n)),
            (Some("prompts/get"), Some(n)) => Some(Item::Prompt(n)),
            (Some("resources/read" | "resources/subscribe" | "resources/unsubscribe"), Some(n)) => {
                Some(Item::Resource(n))
            }
            _ => None,
        };
        Action {
            route,
            method,
            item,
        }
    }

    fn describe(&self) -> String {
        let what = match self.item {
            Some(Item::Tool(n)) => format!(" of tool {n:?}"),
            Some(Item::Prompt(n)) => format!(" of prompt {n:?}"),
            Some(Item::Resource(n)) => format!(" of resource {n:?}"),
            None => String::new(),
        };
        match self.method {
            Some(m) => format!("{m}{what}"),
            None => format!("this request to {}", self.route),
        }
    }
}

/// A denial: what to tell the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// The rule that denied it; `None` when no rule matched.
    pub rule: Option<String>,
    pub message: String,
    /// Scopes that would have let the request through (the first allow rule that
    /// matched everything but its scopes): an OAuth client can ask for them.
    pub missing_scopes: Vec<String>,
}

/// All rules, built once from the config.
#[derive(Default)]
pub struct Policies {
    rules: Vec<Rule>,
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("rules", &self.rules.len())
            .finish()
    }
}

impl Policies {
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// May `who` do `action`? The first matching rule decides; none: denied.
    pub fn check(&self, who: Option<&Identity>, action: &Action) -> Result<(), Denied> {
        let mut missing: Option<&[String]> = None;
        let mut deciding = None;
        for r in &self.rules {
            match r.fit(who, action) {
                Fit::Matches if r.effect == Effect::Allow => return Ok(()),
                Fit::Matches => {
                    deciding = Some(r);
                    break;
                }
                // An allow rule that would match with more scopes: worth telling.
                Fit::LacksScopes if r.effect == Effect::Allow && missing.is_none() => {
                    missing = Some(&r.scopes);
                }
                _ => {}
            }
        }
        let missing_scopes = missing.map(<[String]>::to_vec).unwrap_or_default();
        let hint = if missing_scopes.is_empty() {
            String::new()
        } else {
            format!(" without the scope(s) {}", missing_scopes.join(" "))
        };
        let (what, who) = (action.describe(), caller(who));
        Err(match deciding {
            Some(r) => Denied {
                rule: Some(r.name.clone()),
                message: format!("policy {:?} denies {what} to {who}{hint}", r.name),
                missing_scopes,
            },
            None => Denied {
                rule: None,
                message: format!("no policy allows {what} to {who}{hint} (security.policies)"),
                missing_scopes,
            },
        })
    }
}

fn caller(who: Option<&Identity>) -> String {
    match who {
        Some(id) if !id.subject.is_empty() => format!("subject {:?}", id.subject),
        Some(id) => match &id.client_id {
            Some(c) => format!("client {c:?}"),
            None => "this client".into(),
        },
        None => "anonymous clients".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::sync::Arc;

    fn policies(yaml: &str) -> Policies {
        let cfg = crate::config::load_str(&format!(
            "upstream: {{groups: {{default: {{servers: [{{id: a, url: 'http://127.0.0.1:1'}}]}}}}}}\nsecurity:\n  policies:\n{yaml}"
        ), &|_| None)
        .unwrap();
        Policies::build(&cfg.security.policies).unwrap()
    }

    fn who(sub: &str, scopes: &[&str], claims: Value) -> Identity {
        Identity {
            method: "jwt",
            subject: sub.into(),
            client_id: Some(format!("{sub}-app")),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            claims: Arc::new(claims.as_object().cloned().unwrap_or_default()),
            rule: "r".into(),
        }
    }

    fn call(tool: &str) -> Action<'_> {
        Action::of("/mcp", Some("tools/call"), Some(tool))
    }

    #[test]
    fn first_match_decides_and_the_rest_is_denied() {
        let p = policies(
            "    - {name: no-delete, effect: deny, tools: ['delete_*']}\n    - {effect: allow, subjects: [alice], tools: ['read_*']}\n    - {effect: deny, methods: [tools/call]}\n    - {effect: allow, methods: ['*']}\n",
        );
        let alice = who("alice", &[], Value::Null);
        let bob = who("bob", &[], Value::Null);
        assert!(p.check(Some(&alice), &call("read_file")).is_ok());
        let d = p.check(Some(&alice), &call("delete_file")).unwrap_err();
        assert_eq!(d.rule.as_deref(), Some("no-delete"));
        assert_eq!(
            d.message,
            "policy \"no-delete\" denies tools/call of tool \"delete_file\" to subject \"alice\""
        );
        assert!(p.check(Some(&bob), &call("read_file")).is_err());
        assert!(p
            .check(Some(&bob), &Action::of("/mcp", Some("tools/list"), None))
            .is_ok());
        assert!(p
            .check(None, &Action::of("/mcp", Some("ping"), None))
            .is_ok());
        // A GET stream has no method: only rules without method or item conditions match.
        let e = p
            .check(Some(&bob), &Action::of("/mcp", None, None))
            .unwrap_err();
        assert!(
            e.message
                .starts_with("no policy allows this request to /mcp"),
            "{}",
            e.message
        );
    }

    #[test]
    fn scopes_claims_and_clients() {
        let p = policies(
            "    - {effect: allow, scopes: [files.write], tools: ['write_*']}\n    - {effect: allow, claims: {team: [platform, 'sre-*']}, prompts: ['*']}\n    - {effect: allow, clients: ['ci-*'], resources: ['file:///public/*']}\n",
        );
        let writer = who("w", &["files.write", "x"], Value::Null);
        let reader = who("r", &["files.read"], serde_json::json!({"team": "sre-eu"}));
        assert!(p.check(Some(&writer), &call("write_file")).is_ok());
        let d = p.check(Some(&reader), &call("write_file")).unwrap_err();
        assert_eq!(d.missing_scopes, ["files.write"]);
        assert!(d
            .message
            .ends_with("without the scope(s) files.write (security.policies)"));
        let prompt = Action::of("/mcp", Some("prompts/get"), Some("summarize"));
        assert!(p.check(Some(&reader), &prompt).is_ok());
        assert!(p.check(Some(&writer), &prompt).is_err());
        let listed = who("x", &[], serde_json::json!({"team": ["web", "platform"]}));
        assert!(p.check(Some(&listed), &prompt).is_ok());
        let ci = Identity {
            client_id: Some("ci-main".into()),
            ..who("bot", &[], Value::Null)
        };
        let read = |uri| Action::of("/mcp", Some("resources/read"), Some(uri));
        assert!(p.check(Some(&ci), &read("file:///public/a/b.txt")).is_ok());
        assert!(p.check(Some(&ci), &read("file:///etc/passwd")).is_err());
        assert!(p.check(None, &read("file:///public/a")).is_err());
    }

    #[test]
    fn lists_keep_what_the_caller_may_use() {
        let p = policies(
            "    - {effect: deny, tools: ['admin_*']}\n    - {effect: allow, subjects: [alice], resources: ['mem://alice/*']}\n    - {effect: deny, methods: ['resources/read']}\n    - {effect: allow}\n",
        );
        let mut tools = serde_json::json!({"jsonrpc":"2.0","id":1,"result":{"tools":[
            {"name":"echo"},{"name":"admin_reset"},{"name":"add"},{"nameless":true}]}});
        assert_eq!(p.filter_list(None, "/mcp", ListKind::Tools, &mut tools), 2);
        let names: Vec<_> = tools["result"]["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["echo", "add"]);
        let alice = who("alice", &[], Value::Null);
        let mut templates = serde_json::json!({"jsonrpc":"2.0","id":2,"result":{"resourceTemplates":[
            {"uriTemplate":"mem://alice/{key}"},{"uriTemplate":"mem://bob/{key}"}]}});
        assert_eq!(
            p.filter_list(
                Some(&alice),
                "/mcp",
                ListKind::ResourceTemplates,
                &mut templates
            ),
            1
        );
        assert_eq!(
            templates["result"]["resourceTemplates"][0]["uriTemplate"],
            "mem://alice/{key}"
        );
        // An error answer has no list: nothing to do.
        let mut err = serde_json::json!({"jsonrpc":"2.0","id":3,"error":{"code":-1,"message":"x"}});
        assert_eq!(p.filter_list(None, "/mcp", ListKind::Prompts, &mut err), 0);
    }

    #[test]
    fn config_problems_name_their_path() {
        let errs = crate::state::check::load_str(
            "upstream: {groups: {default: {servers: [{id: a, url: 'http://127.0.0.1:1'}]}}}\nsecurity:\n  policies:\n    - {tools: ['x']}\n    - {effect: allow, tools: ['[bad'], routes: [mcp, /nope]}\n",
            &|_| None,
        )
        .unwrap_err();
        // The config's own checks come first, then the compiled policies'.
        let mut paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(
            paths,
            [
                "security.policies[0].effect",
                "security.policies[1].routes[0]",
                "security.policies[1].routes[1]",
                "security.policies[1].tools[0]",
            ]
        );
    }
}
