//! Who may do what in a space, remembered: every request checks the
//! caller's role, and most requests are posts to a handful of busy spaces,
//! so asking the database each time (the space, then the role) cost two
//! round trips per message.
//!
//! What is remembered and for how long:
//!
//! - a space's routing metadata (its KMS resource, hence the KMS whose keys
//!   its content must be under) never changes: kept until the cache is full;
//! - a user's role in a space (or that they have none) is kept at most
//!   [`ROLE_TTL`], and forgotten at once when the membership of the space
//!   changes:
//!   - on this node, by the store's commit listener ([`Access::on_commit`]),
//!     before the change is even acknowledged to whoever made it;
//!   - on the other nodes, through a bus notice on [`MEMBERSHIP_CHANNEL`](crate::notices::MEMBERSHIP_CHANNEL)
//!     that makes them forget every role they hold (membership changes are
//!     rare next to posts; a notice cannot say which space without putting
//!     ids on the bus it does not carry);
//!   - and if that notice is lost (the bus is best effort), by the TTL.
//!
//! A lookup that raced a change does not put a stale answer back: a
//! generation counter moves with every invalidation, and an answer read
//! under an older generation is used once but not kept.
//!
//! Sockets do not depend on this cache: they stop at the removal event in
//! the space's own stream.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use core_store::{Event, EventKind, Role};

/// Longest a remembered role is trusted without news from the bus.
pub const ROLE_TTL: Duration = Duration::from_secs(5);
/// Most (space, user) roles remembered before the cache starts afresh.
const MAX_ROLES: usize = 200_000;
/// Most spaces remembered.
const MAX_SPACES: usize = 100_000;

/// What routing needs of a space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceMeta {
    /// Id.
    pub id: String,
    /// `kms://<domain>/resources/<id>`.
    pub resource_uri: String,
    /// The domain of the KMS whose keys encrypt the space's content.
    pub kms_domain: String,
}

#[derive(Default)]
struct Inner {
    generation: u64,
    spaces: HashMap<String, Arc<SpaceMeta>>,
    roles: HashMap<String, HashMap<String, (Option<Role>, Instant)>>,
    role_count: usize,
}

/// The cache.
#[derive(Default)]
pub struct Access {
    inner: Mutex<Inner>,
}

/// What a lookup found.
pub enum Cached {
    /// The space and the caller's role in it (`None`: not a member).
    Hit(Arc<SpaceMeta>, Option<Role>),
    /// Ask the database; pass the generation to [`Access::remember`].
    Miss(u64),
}

impl Access {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The remembered role of `user` in `space`, if fresh.
    pub fn get(&self, space: &str, user: &str) -> Cached {
        let inner = self.lock();
        let meta = inner.spaces.get(space);
        let role = inner.roles.get(space).and_then(|r| r.get(user)).filter(|(_, at)| at.elapsed() < ROLE_TTL);
        match (meta, role) {
            (Some(meta), Some((role, _))) => Cached::Hit(meta.clone(), *role),
            _ => Cached::Miss(inner.generation),
        }
    }

    /// Remembers what the database said at `generation`, unless the
    /// membership of some space changed since.
    pub fn remember(&self, generation: u64, meta: &Arc<SpaceMeta>, user: &str, role: Option<Role>) {
        let mut inner = self.lock();
        if inner.generation != generation {
            return;
        }
        if inner.spaces.len() >= MAX_SPACES {
            inner.spaces.clear();
            inner.roles.clear();
            inner.role_count = 0;
        }
        if inner.role_count >= MAX_ROLES {
            inner.roles.clear();
            inner.role_count = 0;
        }
        inner.spaces.entry(meta.id.clone()).or_insert_with(|| meta.clone());
        let previous = inner.roles.entry(meta.id.clone()).or_default().insert(user.to_owned(), (role, Instant::now()));
        if previous.is_none() {
            inner.role_count += 1;
        }
    }

    /// The space's metadata, if remembered.
    pub fn space(&self, space: &str) -> Option<Arc<SpaceMeta>> {
        self.lock().spaces.get(space).cloned()
    }

    /// Forgets the roles in `space`.
    pub fn forget_space(&self, space: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        if let Some(r) = inner.roles.remove(space) {
            inner.role_count -= r.len();
        }
    }

    /// Forgets every role (another node changed some membership).
    pub fn forget_roles(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.roles.clear();
        inner.role_count = 0;
    }

    /// The commit listener's part: membership changes of this node.
    pub fn on_commit(&self, events: &[Event]) {
        for e in events {
            if matches!(e.kind, EventKind::MemberAdded | EventKind::MemberRemoved) {
                self.forget_space(&e.space_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(id: &str) -> Arc<SpaceMeta> {
        Arc::new(SpaceMeta { id: id.into(), resource_uri: format!("kms://k/resources/{id}"), kms_domain: "k".into() })
    }

    fn role(a: &Access, space: &str, user: &str) -> Option<Option<Role>> {
        match a.get(space, user) {
            Cached::Hit(_, r) => Some(r),
            Cached::Miss(_) => None,
        }
    }

    #[test]
    fn remembered_until_the_membership_changes() {
        let a = Access::default();
        let Cached::Miss(g) = a.get("s", "alice") else { panic!() };
        a.remember(g, &meta("s"), "alice", Some(Role::Moderator));
        a.remember(g, &meta("s"), "bob", None);
        a.remember(g, &meta("t"), "bob", Some(Role::Member));
        assert_eq!(role(&a, "s", "alice"), Some(Some(Role::Moderator)));
        assert_eq!(role(&a, "s", "bob"), Some(None), "not a member, remembered");
        a.forget_space("s");
        assert_eq!(role(&a, "s", "alice"), None);
        assert_eq!(role(&a, "t", "bob"), Some(Some(Role::Member)), "other spaces stay");
        assert!(a.space("s").is_some(), "metadata stays");
        a.forget_roles();
        assert_eq!(role(&a, "t", "bob"), None);
    }

    #[test]
    fn an_answer_read_before_a_change_is_not_kept() {
        let a = Access::default();
        let Cached::Miss(g) = a.get("s", "bob") else { panic!() };
        // Bob is removed while his role is being read.
        a.forget_space("s");
        a.remember(g, &meta("s"), "bob", Some(Role::Member));
        assert_eq!(role(&a, "s", "bob"), None);
    }
}
