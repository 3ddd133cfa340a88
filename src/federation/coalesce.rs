//! Members' `list_changed` notifications of one kind arriving together, sent to the
//! client once: the first at once, and — when more of that kind arrive within the
//! window — one more when the window closes, so a change that came after the first
//! notice (another member's) is never lost.

use serde_json::Value;
use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, Instant};

/// How long `list_changed` notifications of one kind are sent as one.
const WINDOW: Duration = Duration::from_millis(500);

/// The `list_changed` kinds sent lately, and those held for the end of their window.
#[derive(Default)]
pub struct Coalesce {
    sent: BTreeMap<String, Instant>,
    held: BTreeMap<String, Value>,
}

impl Coalesce {
    /// Is `message` to be sent now? A `list_changed` of a kind sent within the window is
    /// held instead (one per kind), for [`Coalesce::due`].
    pub fn admit(&mut self, message: &Value) -> bool {
        self.admit_at(message, Instant::now())
    }

    fn admit_at(&mut self, message: &Value, now: Instant) -> bool {
        let Some(method) = message.get("method").and_then(Value::as_str) else {
            return true;
        };
        if !method.ends_with("/list_changed") || message.get("id").is_some() {
            return true;
        }
        if self
            .sent
            .get(method)
            .is_some_and(|at| now.duration_since(*at) < WINDOW)
        {
            self.held.insert(method.to_string(), message.clone());
            return false;
        }
        self.sent.insert(method.to_string(), now);
        true
    }

    /// A held notification whose window has closed, now sent (its window starts again).
    pub fn due(&mut self) -> Option<Value> {
        self.due_at(Instant::now())
    }

    fn due_at(&mut self, now: Instant) -> Option<Value> {
        let method = self
            .held
            .keys()
            .find(|m| self.sent.get(*m).is_none_or(|at| now >= *at + WINDOW))?
            .clone();
        self.sent.insert(method.clone(), now);
        self.held.remove(&method)
    }

    /// A held notification, whatever its window: the members' streams have ended.
    pub fn any(&mut self) -> Option<Value> {
        self.held.pop_first().map(|(_, message)| message)
    }

    /// `next` (the members' next message), or `None` when a held notification falls due
    /// first. `next` must be cancel-safe (a stream's `next()` is).
    pub async fn until_due<F: Future>(&self, next: F) -> Option<F::Output> {
        let Some(at) = self.held.keys().filter_map(|m| self.sent.get(m)).min() else {
            return Some(next.await);
        };
        let at = tokio::time::Instant::from_std(*at + WINDOW);
        tokio::select! {
            out = next => Some(out),
            () = tokio::time::sleep_until(at) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn one_kind_within_the_window_is_held_and_sent_once_when_it_closes() {
        let tools = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        let prompts = json!({"jsonrpc": "2.0", "method": "notifications/prompts/list_changed"});
        let log = json!({"jsonrpc": "2.0", "method": "notifications/message"});
        let mut c = Coalesce::default();
        let t0 = Instant::now();
        assert!(c.admit_at(&tools, t0));
        assert!(c.admit_at(&prompts, t0), "another kind is not held");
        assert!(c.admit_at(&log, t0), "other notifications pass");
        assert!(!c.admit_at(&tools, t0 + WINDOW / 5));
        assert!(!c.admit_at(&tools, t0 + WINDOW / 4), "held once per kind");
        assert_eq!(
            c.due_at(t0 + WINDOW / 2),
            None,
            "not before the window closes"
        );
        assert_eq!(c.due_at(t0 + WINDOW), Some(tools.clone()));
        assert_eq!(c.due_at(t0 + WINDOW * 3), None, "sent once");
        assert!(
            !c.admit_at(&tools, t0 + WINDOW + WINDOW / 2),
            "the trailing one opened a window"
        );
        assert_eq!(c.any(), Some(tools.clone()));
        assert!(c.admit_at(&tools, t0 + WINDOW * 3));
    }

    #[tokio::test]
    async fn waiting_ends_when_a_held_notification_falls_due() {
        let tools = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
        let mut c = Coalesce::default();
        assert_eq!(c.until_due(async { 1 }).await, Some(1));
        assert!(c.admit(&tools));
        assert!(!c.admit(&tools));
        let never = std::future::pending::<()>();
        assert_eq!(c.until_due(never).await, None);
    }
}
