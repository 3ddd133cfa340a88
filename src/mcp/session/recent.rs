//! Sealed ids a worker thread opened lately: a client sends its session id on every
//! request, and opening it (SHA-256 of the binding, XChaCha20-Poly1305, base64) was a
//! sixth of the instructions of a call carrying one. Each thread keeps the ids it opened
//! in a table of [`SLOTS`] entries, one slot per id by a keyed hash of it; the same id
//! presented again for the same group and identity is answered from its slot, and what
//! it carries is shared, not copied.
//!
//! Only what opened is kept, with the group and identity it opened for: an id presented
//! for any other binding (another identity holding a stolen id) is looked up, does not
//! match, and goes through the decryption, which refuses it, as before. The id is
//! compared in constant time. A table belongs to one set of keys ([`super::SessionKeys`]
//! holds it): keys changed by a reload start empty tables, so an id sealed with a key no
//! longer configured does not open from a table either. Nothing the id carries changes
//! with time (its age is checked by the caller on `issued_at`), so an entry needs no
//! expiry; a newer id whose slot it takes replaces it.

use super::{Opened, Owner};
use std::hash::BuildHasher;
use subtle::ConstantTimeEq;

/// Entries per worker thread: under 200 kB a thread when all are full of the longest
/// ([`LONGEST`]), about 80 kB with ids of a usual length; 2 kB while empty.
pub(super) const SLOTS: usize = 256;

/// An id, with the group and identity it is bound to and what it carries, longer than
/// this many bytes is not kept, so a thread's table stays small whatever the upstream's
/// session ids and the callers' identities.
pub(super) const LONGEST: usize = 512;

/// How much of an id chooses its slot: 16 base64 characters, 96 random bits of the
/// nonce the id starts with.
const HASHED: usize = 16;

pub(super) struct Recent {
    slots: Vec<Option<Box<Entry>>>,
    /// Chooses an id's slot: keyed per table, so which ids share a slot is not known
    /// outside.
    hasher: std::collections::hash_map::RandomState,
}

struct Entry {
    token: Box<str>,
    group: Box<str>,
    owner: Option<Identity>,
    opened: Opened,
}

/// An [`Owner`] kept.
struct Identity {
    method: Box<str>,
    rule: Box<str>,
    subject: Box<str>,
    client_id: Option<Box<str>>,
}

impl Identity {
    fn of(o: Owner<'_>) -> Identity {
        Identity {
            method: o.method.into(),
            rule: o.rule.into(),
            subject: o.subject.into(),
            client_id: o.client_id.map(Into::into),
        }
    }

    fn is(&self, o: Owner<'_>) -> bool {
        *self.method == *o.method
            && *self.rule == *o.rule
            && *self.subject == *o.subject
            && self.client_id.as_deref() == o.client_id
    }
}

impl Recent {
    pub(super) fn new() -> Recent {
        Recent {
            slots: (0..SLOTS).map(|_| None).collect(),
            hasher: Default::default(),
        }
    }

    /// An id's slot: by its first [`HASHED`] bytes, which encode part of its nonce,
    /// random per id (hashing all of it cost a thousand instructions per request).
    fn slot(&self, token: &str) -> usize {
        let bytes = token.as_bytes();
        self.hasher.hash_one(&bytes[..bytes.len().min(HASHED)]) as usize % SLOTS
    }

    /// What `token` opened to when presented for `group` by `owner`, if this table kept
    /// it.
    pub(super) fn get(&self, group: &str, owner: Option<Owner<'_>>, token: &str) -> Option<Opened> {
        let e = self.slots[self.slot(token)].as_ref()?;
        let same_token =
            e.token.len() == token.len() && bool::from(e.token.as_bytes().ct_eq(token.as_bytes()));
        let same_binding = *e.group == *group
            && match (&e.owner, owner) {
                (None, None) => true,
                (Some(kept), Some(o)) => kept.is(o),
                _ => false,
            };
        match same_token && same_binding {
            true => Some(e.opened.clone()),
            false => None,
        }
    }

    /// Keep what `token` opened to for `group` and `owner` (unless they are longer than
    /// [`LONGEST`] bytes together).
    pub(super) fn put(
        &mut self,
        group: &str,
        owner: Option<Owner<'_>>,
        token: &str,
        opened: &Opened,
    ) {
        let owner_len = owner.map_or(0, |o| {
            o.method.len() + o.rule.len() + o.subject.len() + o.client_id.map_or(0, str::len)
        });
        let len = token.len()
            + group.len()
            + owner_len
            + opened.server_id.len()
            + opened.upstream_session.len();
        if len > LONGEST {
            return;
        }
        let slot = self.slot(token);
        self.slots[slot] = Some(Box::new(Entry {
            token: token.into(),
            group: group.into(),
            owner: owner.map(Identity::of),
            opened: opened.clone(),
        }));
    }

    /// How many entries are kept (tests).
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.slots.iter().filter(|s| s.is_some()).count()
    }
}
