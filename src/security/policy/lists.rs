//! The lists that are filtered (`tools`, `prompts`, `resources`, `resourceTemplates`)
//! and their filtering: an item is kept only when the caller could use it.

use super::{Action, Policies};
use crate::security::auth::Identity;
use serde_json::Value;

/// The lists that are filtered, with where their items and names sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Tools,
    Prompts,
    Resources,
    ResourceTemplates,
}

impl ListKind {
    pub const ALL: [ListKind; 4] = [
        ListKind::Tools,
        ListKind::Prompts,
        ListKind::Resources,
        ListKind::ResourceTemplates,
    ];

    /// The member of a result that holds this list.
    pub const fn key(self) -> &'static str {
        match self {
            ListKind::Tools => "tools",
            ListKind::Prompts => "prompts",
            ListKind::Resources => "resources",
            ListKind::ResourceTemplates => "resourceTemplates",
        }
    }

    pub fn of(method: &str) -> Option<ListKind> {
        Some(match method {
            "tools/list" => ListKind::Tools,
            "prompts/list" => ListKind::Prompts,
            "resources/list" => ListKind::Resources,
            "resources/templates/list" => ListKind::ResourceTemplates,
            _ => return None,
        })
    }

    /// The result's array, each item's name field, and the method that uses an item.
    fn shape(self) -> (&'static str, &'static str, &'static str) {
        match self {
            ListKind::Tools => (self.key(), "name", "tools/call"),
            ListKind::Prompts => (self.key(), "name", "prompts/get"),
            ListKind::Resources => (self.key(), "uri", "resources/read"),
            ListKind::ResourceTemplates => (self.key(), "uriTemplate", "resources/read"),
        }
    }
}

impl Policies {
    /// Drop from every list a JSON-RPC answer carries what `who` may not use, whatever
    /// request it answers: `message` is one response or a batch of them, and each
    /// `result.tools`, `.prompts`, `.resources` and `.resourceTemplates` array is
    /// filtered. Returns how many items were dropped (0: leave the bytes as they are).
    pub fn filter_lists(&self, who: Option<&Identity>, route: &str, message: &mut Value) -> usize {
        if let Value::Array(batch) = message {
            return batch
                .iter_mut()
                .map(|m| self.filter_lists(who, route, m))
                .sum();
        }
        ListKind::ALL
            .iter()
            .map(|kind| self.filter_list(who, route, *kind, message))
            .sum()
    }

    /// Drop from a list result what `who` may not use. `message` is one JSON-RPC
    /// response; returns how many items were dropped (0: leave the bytes as they are).
    pub fn filter_list(
        &self,
        who: Option<&Identity>,
        route: &str,
        kind: ListKind,
        message: &mut Value,
    ) -> usize {
        let (key, field, method) = kind.shape();
        let Some(items) = message
            .get_mut("result")
            .and_then(|r| r.get_mut(key))
            .and_then(Value::as_array_mut)
        else {
            return 0;
        };
        let before = items.len();
        items.retain(|item| {
            // An item without a name cannot be matched: it is not shown.
            item.get(field).and_then(Value::as_str).is_some_and(|name| {
                self.check(who, &Action::of(route, Some(method), Some(name)))
                    .is_ok()
            })
        });
        before - items.len()
    }
}
