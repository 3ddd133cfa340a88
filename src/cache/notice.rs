//! Upstream notifications that make cached answers stale: `notifications/tools/list_changed`,
//! `…/prompts/list_changed`, `…/resources/list_changed` and `notifications/resources/updated`.
//!
//! They arrive on streams the gateway relays without parsing (a GET stream, a POST's SSE
//! answer, a modern `subscriptions/listen`), so [`Watch`] looks for the method names in
//! the bytes as they pass, carrying the end of each chunk into the next so a name split
//! across chunks is still seen. A false positive (the text inside a tool result) only
//! drops entries early, which is always safe.

/// The method names that invalidate.
const NAMES: &[&[u8]] = &[
    b"notifications/tools/list_changed",
    b"notifications/prompts/list_changed",
    b"notifications/resources/list_changed",
    b"notifications/resources/updated",
];

/// Whether a notification of `method` invalidates.
pub fn invalidates(method: &str) -> bool {
    NAMES.contains(&method.as_bytes())
}

/// The longest name, less one: what is carried between chunks.
const CARRY: usize = 36;

/// Looks for invalidating notifications in one stream's chunks.
#[derive(Default)]
pub struct Watch {
    tail: Vec<u8>,
}

impl Watch {
    /// Whether `chunk` (after the chunks before it) holds an invalidating notification.
    pub fn seen(&mut self, chunk: &[u8]) -> bool {
        let mut found = contains(chunk);
        if !self.tail.is_empty() && !found {
            let mut joined = self.tail.clone();
            joined.extend_from_slice(&chunk[..chunk.len().min(CARRY)]);
            found = contains(&joined);
        }
        // The last `CARRY` bytes seen, for the next chunk.
        self.tail
            .extend_from_slice(&chunk[chunk.len() - chunk.len().min(CARRY)..]);
        let excess = self.tail.len().saturating_sub(CARRY);
        self.tail.drain(..excess);
        found
    }
}

fn contains(hay: &[u8]) -> bool {
    memchr::memmem::find(hay, b"notifications/").is_some()
        && NAMES.iter().any(|n| memchr::memmem::find(hay, n).is_some())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_found_across_chunks() {
        let event = b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/tools/list_changed\"}\n\n";
        for split in 0..event.len() {
            let mut w = Watch::default();
            let (a, b) = event.split_at(split);
            assert!(w.seen(a) | w.seen(b), "split at {split}");
        }
        let mut w = Watch::default();
        assert!(!w.seen(b"data: {\"method\":\"notifications/progress\"}\n\n"));
        assert!(w.seen(b"data: {\"method\":\"notifications/resources/updated\",\"params\":{}}\n\n"));
        // One byte at a time.
        let mut w = Watch::default();
        assert!(event.iter().any(|b| w.seen(std::slice::from_ref(b))));
    }
}
