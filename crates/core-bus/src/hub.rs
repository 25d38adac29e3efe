//! The local fan-out registry shared by both bus implementations:
//! space id → one `broadcast` channel (and, for NATS, one transport listener),
//! created on the first subscribe and removed when the last subscriber leaves.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use tokio::sync::{broadcast, OnceCell};
use tokio::task::JoinHandle;

use crate::{BusError, Notice, Signal, Subscription};

/// Registry of the spaces that have local subscribers.
#[derive(Debug)]
pub(crate) struct Hub {
    spaces: Mutex<HashMap<String, Entry>>,
    capacity: usize,
}

#[derive(Debug)]
struct Entry {
    space: Arc<Space>,
    subscribers: usize,
}

/// One space's local fan-out point.
#[derive(Debug)]
pub(crate) struct Space {
    tx: broadcast::Sender<Signal>,
    /// The transport listener feeding `tx`, started once by the first subscriber.
    listener: OnceCell<Listener>,
}

/// A transport task that is aborted when the space is dropped (`None`: no transport).
#[derive(Debug)]
pub(crate) struct Listener(pub(crate) Option<JoinHandle<()>>);

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(task) = &self.0 {
            task.abort();
        }
    }
}

/// Held by each [`Subscription`]; releases the space's registry entry on drop.
#[derive(Debug)]
pub(crate) struct SpaceGuard {
    hub: Arc<Hub>,
    space: Arc<Space>,
    pub(crate) space_id: String,
}

impl Drop for SpaceGuard {
    fn drop(&mut self) {
        let mut spaces = self.hub.lock();
        if let Some(entry) = spaces.get_mut(&self.space_id) {
            // The entry may already have been retired and replaced (transport ended).
            if Arc::ptr_eq(&entry.space, &self.space) {
                entry.subscribers -= 1;
                if entry.subscribers == 0 {
                    spaces.remove(&self.space_id);
                }
            }
        }
    }
}

impl Hub {
    pub(crate) fn new(capacity: usize) -> Arc<Self> {
        Arc::new(Hub { spaces: Mutex::new(HashMap::new()), capacity: capacity.max(1) })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // No code path panics while holding the lock; recover anyway rather than propagate.
        self.spaces.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a subscriber to `space_id`, creating its entry if needed, and makes
    /// sure the transport listener of the space runs: `start` is called (with the
    /// space's sender and a weak handle for [`Hub::retire`]) by the first
    /// subscriber only; concurrent subscribers of the same space wait for it, and
    /// if it fails the next subscriber tries again.
    pub(crate) async fn subscribe<F, Fut>(self: &Arc<Self>, space_id: &str, start: F) -> Result<Subscription, BusError>
    where
        F: FnOnce(broadcast::Sender<Signal>, Weak<Space>) -> Fut,
        Fut: Future<Output = Result<Listener, BusError>>,
    {
        crate::validate_space_id(space_id)?;
        let (rx, space) = {
            let mut spaces = self.lock();
            let entry = spaces.entry(space_id.to_owned()).or_insert_with(|| Entry {
                space: Arc::new(Space { tx: broadcast::channel(self.capacity).0, listener: OnceCell::new() }),
                subscribers: 0,
            });
            entry.subscribers += 1;
            (entry.space.tx.subscribe(), entry.space.clone())
        };
        // From here on, dropping `sub` (e.g. on error) undoes the registration.
        let sub = Subscription::new(
            rx,
            SpaceGuard { hub: self.clone(), space: space.clone(), space_id: space_id.to_owned() },
        );
        space.listener.get_or_try_init(|| start(space.tx.clone(), Arc::downgrade(&space))).await?;
        Ok(sub)
    }

    /// Delivers a notice to the local subscribers of its space, if any.
    pub(crate) fn deliver(&self, n: Notice) {
        let tx = self.lock().get(&n.space_id).map(|e| e.space.tx.clone());
        if let Some(tx) = tx {
            // Err only means every receiver just went away.
            let _ = tx.send(Signal::Notice(n));
        }
    }

    /// The transport of a space ended for good: forget the entry (so that a
    /// later subscribe starts afresh) and tell its subscribers.
    pub(crate) fn retire(&self, space_id: &str, space: &Weak<Space>, tx: &broadcast::Sender<Signal>) {
        {
            let mut spaces = self.lock();
            if spaces.get(space_id).is_some_and(|e| std::ptr::eq(Arc::as_ptr(&e.space), space.as_ptr())) {
                spaces.remove(space_id);
            }
        }
        let _ = tx.send(Signal::Closed);
    }

    /// Number of spaces with at least one local subscriber.
    pub(crate) fn active_spaces(&self) -> usize {
        self.lock().len()
    }
}
