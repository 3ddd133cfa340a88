//! Rules compiled from the config: globs built once, every problem named by its path.

use super::rule::{ClaimMatch, Rule};
use super::Policies;
use crate::config::PolicyRuleConfig;
use globset::{Glob, GlobSet, GlobSetBuilder};
use serde_json::Value;

type Problems = Vec<(String, String)>;

/// A glob set from a config list (`None` for an empty list).
fn globs(list: &[String], at: &str, errs: &mut Problems) -> Option<GlobSet> {
    if list.is_empty() {
        return None;
    }
    let mut b = GlobSetBuilder::new();
    for (i, g) in list.iter().enumerate() {
        match Glob::new(g) {
            Ok(g) => {
                b.add(g);
            }
            Err(e) => errs.push((format!("{at}[{i}]"), format!("{g:?} is not a glob: {e}"))),
        }
    }
    b.build()
        .map_err(|e| errs.push((at.to_string(), e.to_string())))
        .ok()
}

fn claim_match(v: &Value, at: &str, errs: &mut Problems) -> ClaimMatch {
    match v {
        Value::String(s) => ClaimMatch::Glob(
            globs(std::slice::from_ref(s), at, errs).unwrap_or_else(GlobSet::empty),
        ),
        Value::Array(items) => ClaimMatch::Any(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| claim_match(v, &format!("{at}[{i}]"), errs))
                .collect(),
        ),
        other => ClaimMatch::Equals(other.clone()),
    }
}

impl Policies {
    /// Build the rules; every problem comes back as `(path, message)`.
    pub fn build(cfg: &[PolicyRuleConfig]) -> Result<Policies, Problems> {
        let mut errs = Vec::new();
        let mut rules = Vec::new();
        for (i, r) in cfg.iter().enumerate() {
            let at = |k: &str| format!("security.policies[{i}].{k}");
            let Some(effect) = r.effect else {
                errs.push((at("effect"), "is required: allow or deny".into()));
                continue;
            };
            for (j, p) in r.routes.iter().enumerate() {
                if !p.starts_with('/') {
                    errs.push((
                        at(&format!("routes[{j}]")),
                        format!("{p:?} must start with '/'"),
                    ));
                }
            }
            rules.push(Rule {
                name: if r.name.is_empty() {
                    format!("policies[{i}]")
                } else {
                    r.name.clone()
                },
                effect,
                routes: r.routes.clone(),
                subjects: globs(&r.subjects, &at("subjects"), &mut errs),
                clients: globs(&r.clients, &at("clients"), &mut errs),
                scopes: r.scopes.clone(),
                claims: r
                    .claims
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            claim_match(v, &at(&format!("claims.{k}")), &mut errs),
                        )
                    })
                    .collect(),
                methods: globs(&r.methods, &at("methods"), &mut errs),
                tools: globs(&r.tools, &at("tools"), &mut errs),
                prompts: globs(&r.prompts, &at("prompts"), &mut errs),
                resources: globs(&r.resources, &at("resources"), &mut errs),
            });
        }
        if errs.is_empty() {
            Ok(Policies { rules })
        } else {
            Err(errs)
        }
    }
}
