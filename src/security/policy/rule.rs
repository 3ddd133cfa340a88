//! One compiled rule and how it fits a request: route, method, item, then who calls
//! (subject, client id, claims, scopes).

use super::{Action, Item};
use crate::config::Effect;
use crate::security::auth::Identity;
use globset::GlobSet;
use serde_json::Value;

/// How a claim condition matches.
pub(super) enum ClaimMatch {
    /// A string glob: the claim (or any string in a list claim) matches it.
    Glob(GlobSet),
    /// Any of these (strings are globs).
    Any(Vec<ClaimMatch>),
    /// Equality (numbers, booleans, objects).
    Equals(Value),
}

impl ClaimMatch {
    fn matches(&self, claim: &Value) -> bool {
        match (self, claim) {
            (ClaimMatch::Any(all), _) => all.iter().any(|m| m.matches(claim)),
            (_, Value::Array(items)) => items.iter().any(|c| self.matches_one(c)),
            _ => self.matches_one(claim),
        }
    }

    fn matches_one(&self, claim: &Value) -> bool {
        match self {
            ClaimMatch::Glob(g) => claim.as_str().is_some_and(|s| g.is_match(s)),
            ClaimMatch::Equals(v) => v == claim,
            ClaimMatch::Any(all) => all.iter().any(|m| m.matches_one(claim)),
        }
    }
}

pub(super) struct Rule {
    pub(super) name: String,
    pub(super) effect: Effect,
    pub(super) routes: Vec<String>,
    pub(super) subjects: Option<GlobSet>,
    pub(super) clients: Option<GlobSet>,
    pub(super) scopes: Vec<String>,
    pub(super) claims: Vec<(String, ClaimMatch)>,
    pub(super) methods: Option<GlobSet>,
    pub(super) tools: Option<GlobSet>,
    pub(super) prompts: Option<GlobSet>,
    pub(super) resources: Option<GlobSet>,
}

/// How a rule relates to a request.
#[derive(PartialEq, Eq)]
pub(super) enum Fit {
    Matches,
    /// Everything but the scopes matched.
    LacksScopes,
    No,
}

impl Rule {
    pub(super) fn fit(&self, who: Option<&Identity>, action: &Action) -> Fit {
        if !(self.routes.is_empty() || self.routes.iter().any(|r| r == action.route)) {
            return Fit::No;
        }
        if let Some(m) = &self.methods {
            if !action.method.is_some_and(|x| m.is_match(x)) {
                return Fit::No;
            }
        }
        let names_items =
            self.tools.is_some() || self.prompts.is_some() || self.resources.is_some();
        if names_items {
            let hit = match action.item {
                Some(Item::Tool(n)) => self.tools.as_ref().is_some_and(|g| g.is_match(n)),
                Some(Item::Prompt(n)) => self.prompts.as_ref().is_some_and(|g| g.is_match(n)),
                Some(Item::Resource(n)) => self.resources.as_ref().is_some_and(|g| g.is_match(n)),
                None => false,
            };
            if !hit {
                return Fit::No;
            }
        }
        let needs_identity = self.subjects.is_some()
            || self.clients.is_some()
            || !self.scopes.is_empty()
            || !self.claims.is_empty();
        if !needs_identity {
            return Fit::Matches;
        }
        let Some(who) = who else {
            return Fit::No;
        };
        if let Some(s) = &self.subjects {
            if !s.is_match(&who.subject) {
                return Fit::No;
            }
        }
        if let Some(c) = &self.clients {
            if !who.client_id.as_deref().is_some_and(|id| c.is_match(id)) {
                return Fit::No;
            }
        }
        for (name, m) in &self.claims {
            if !who.claims.get(name).is_some_and(|v| m.matches(v)) {
                return Fit::No;
            }
        }
        if self.scopes.iter().all(|s| who.scopes.contains(s)) {
            Fit::Matches
        } else {
            Fit::LacksScopes
        }
    }
}
