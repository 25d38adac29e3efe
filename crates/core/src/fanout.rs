//! Real-time fan-out on one node: for each space some local socket watches,
//! one bus subscription, the local watchers, and a ring of the space's
//! latest event frames, already serialized.
//!
//! Why: a message to a space of twenty members used to cost twenty database
//! reads and twenty serializations of the same event, one per socket. Now
//! the store's commit listener ([`Fanout::committed`]) serializes each event
//! of a watched space once, right after its commit, into the space's ring,
//! and wakes the watchers; each socket sends the shared frame.
//!
//! The database stays the truth; the ring is a cache of it that is allowed
//! to have holes. A socket takes from the ring only a run that starts right
//! after what it delivered last and has no gap. Otherwise it reads the
//! database:
//!
//! - a socket *behind the ring* (a slow client, a resume from long ago)
//!   reads its own pages, as before: backpressure costs one page of memory,
//!   not a queue;
//! - a socket that knows of events the ring lacks (appended by another
//!   node, which only sent a bus notice "space X advanced to N", or by a
//!   handle that took another path) reads them through [`Watch::fill`]:
//!   one socket per node reads the page and puts it into the ring, the
//!   others wait for it and take it from there.
//!
//! Wake-ups carry a target ("space X has events up to N"), from the commit
//! listener or from a bus notice; a socket delivers at least up to it. A
//! target of [`CHECK_DB`] (on connect, on a join, after the bus dropped a
//! subscription) means "read the database until it has nothing more", the
//! old way.
//!
//! Read receipts: the node also follows the space's receipts channel (see
//! [`receipts_channel`]). A notice there says only that some read marker of
//! the space moved; the node reads the space's markers from the database,
//! compares them with the last ones it saw, and hands each watcher the
//! markers of other members that moved. Bus messages stay hints: what a
//! socket is told comes from the database.
//!
//! Memory: rings exist only for watched spaces, hold at most
//! [`RING_CAPACITY`] frames each, and all rings together at most
//! [`RING_BUDGET`] bytes; past that, the rings that were written longest
//! ago are emptied (their sockets read the database).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use core_bus::{BusError, EventBus};
use core_store::{Event, EventKind, Store, StoreError};
use serde::Serialize;
use tokio::sync::Notify;

use crate::notices::receipts_channel;

/// Frames kept per watched space.
pub const RING_CAPACITY: usize = 256;
/// Bytes of frames kept over all spaces of the node.
pub const RING_BUDGET: usize = 64 << 20;
/// Events per database read.
pub const PAGE: u32 = 200;
/// A wake-up target meaning "read the database until it has nothing more".
pub const CHECK_DB: i64 = i64::MAX;

/// An event frame as sockets send it: `{"type":"event","event":{…}}`.
#[derive(Debug)]
pub struct Frame {
    /// The event's sequence number.
    pub seq: i64,
    /// Its kind (a socket stops at its own removal).
    pub kind: EventKind,
    /// Its subject (whose membership changed).
    pub subject: Option<String>,
    /// The serialized frame, shared by every socket that sends it.
    pub text: Utf8Bytes,
}

impl Frame {
    /// Serializes `e` once.
    pub fn of(e: &Event) -> Frame {
        #[derive(Serialize)]
        struct Wire<'a> {
            #[serde(rename = "type")]
            kind: &'static str,
            event: &'a Event,
        }
        // Serializing an Event (strings and integers) cannot fail.
        let text = serde_json::to_string(&Wire { kind: "event", event: e }).unwrap_or_default();
        Frame { seq: e.seq, kind: e.kind, subject: e.subject.clone(), text: text.into() }
    }
}

/// What a socket is asked to do, accumulated until it wakes.
#[derive(Debug, Default)]
pub struct Pending {
    /// Spaces with news, and up to which seq (or [`CHECK_DB`]).
    pub spaces: HashMap<String, i64>,
    /// The user's own channel spoke (joins, own read markers).
    pub joins: bool,
    /// Other members' read markers that moved: space → user → seq.
    pub receipts: HashMap<String, HashMap<String, i64>>,
}

/// A socket's mailbox: what to do, and the bell.
#[derive(Debug)]
pub struct Signal {
    /// The socket's user (its own markers come another way).
    pub user: String,
    pending: Mutex<Pending>,
    wake: Notify,
}

impl Signal {
    /// A mailbox for a socket of `user`.
    pub fn new(user: &str) -> Arc<Signal> {
        Arc::new(Signal { user: user.to_owned(), pending: Mutex::default(), wake: Notify::new() })
    }

    fn lock(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Space `space` has events up to `target` (or [`CHECK_DB`]).
    pub fn space(&self, space: &str, target: i64) {
        {
            let mut p = self.lock();
            match p.spaces.get_mut(space) {
                Some(t) => *t = (*t).max(target),
                None => {
                    p.spaces.insert(space.to_owned(), target);
                }
            }
        }
        self.wake.notify_one();
    }

    /// The user's own channel spoke.
    pub fn joins(&self) {
        self.lock().joins = true;
        self.wake.notify_one();
    }

    fn receipt(&self, space: &str, user: &str, seq: i64) {
        {
            let mut p = self.lock();
            let users = p.receipts.entry(space.to_owned()).or_default();
            let s = users.entry(user.to_owned()).or_insert(seq);
            *s = (*s).max(seq);
        }
        self.wake.notify_one();
    }

    /// Waits until something is pending (returns at once if something came
    /// since the last [`Signal::take`]).
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Takes everything pending.
    pub fn take(&self) -> Pending {
        std::mem::take(&mut *self.lock())
    }
}

/// The frames of one space, by sequence number, with holes.
#[derive(Debug, Default)]
struct Ring {
    /// Seq of `slots[0]`.
    base: i64,
    slots: VecDeque<Option<Arc<Frame>>>,
    bytes: usize,
}

/// What the ring holds right after some seq.
pub enum After {
    /// A gap-free run (non-empty).
    Frames(Vec<Arc<Frame>>),
    /// The ring starts later: read the database.
    Behind,
    /// Nothing right after it (the end, or a hole).
    Nothing,
}

impl Ring {
    /// Inserts a frame; returns the bytes added (negative: removed).
    fn insert(&mut self, f: Arc<Frame>) -> isize {
        let mut delta = 0isize;
        if !self.slots.is_empty() && f.seq >= self.base + (self.slots.len() + RING_CAPACITY) as i64 {
            // Far ahead (the space moved on elsewhere): nothing kept would stay.
            delta -= self.clear() as isize;
        }
        if self.slots.is_empty() {
            self.base = f.seq;
        }
        if f.seq < self.base {
            // Older than the ring: only worth keeping right before it, and
            // only if nothing is lost (the ring stays a window).
            if f.seq != self.base - 1 || self.slots.len() >= RING_CAPACITY {
                return 0;
            }
            self.base -= 1;
            self.slots.push_front(None);
        }
        let i = (f.seq - self.base) as usize;
        while self.slots.len() <= i {
            self.slots.push_back(None);
        }
        let mut change = 0isize;
        if self.slots[i].is_none() {
            change += f.text.len() as isize;
            self.slots[i] = Some(f);
        }
        while self.slots.len() > RING_CAPACITY {
            if let Some(Some(old)) = self.slots.pop_front() {
                change -= old.text.len() as isize;
            }
            self.base += 1;
        }
        self.bytes = (self.bytes as isize + change) as usize;
        delta + change
    }

    fn after(&self, from: i64, max: usize) -> After {
        if self.slots.is_empty() {
            return After::Nothing;
        }
        let first = from + 1;
        if first < self.base {
            return After::Behind;
        }
        let run: Vec<Arc<Frame>> =
            self.slots.iter().skip((first - self.base) as usize).take(max).map_while(|s| s.clone()).collect();
        if run.is_empty() {
            After::Nothing
        } else {
            After::Frames(run)
        }
    }

    fn clear(&mut self) -> usize {
        let freed = self.bytes;
        self.slots.clear();
        self.bytes = 0;
        freed
    }
}

/// One watched space.
struct Entry {
    id: String,
    /// The node's byte count of all rings (this ring's share leaves with it).
    bytes: Arc<AtomicUsize>,
    state: Mutex<State>,
    /// One database read per node at a time for this space ([`Watch::fill`]).
    fill: tokio::sync::Mutex<()>,
    /// The bus subscriptions, started by the first watcher.
    live: tokio::sync::OnceCell<Tasks>,
}

struct State {
    ring: Ring,
    watchers: HashMap<u64, Arc<Signal>>,
    /// The highest seq the watchers were woken for.
    notified: i64,
    /// The space's read markers as last read, to tell which moved.
    receipts: HashMap<String, i64>,
    written: Instant,
}

impl Entry {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes every watcher for events up to `seq`, unless they already were.
    fn notify(&self, seq: i64) {
        let mut st = self.lock();
        if seq <= st.notified {
            return;
        }
        st.notified = seq;
        for w in st.watchers.values() {
            w.space(&self.id, seq);
        }
    }

    fn notify_check_db(&self) {
        for w in self.lock().watchers.values() {
            w.space(&self.id, CHECK_DB);
        }
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        let st = self.state.get_mut().unwrap_or_else(|p| p.into_inner());
        self.bytes.fetch_sub(st.ring.bytes, Ordering::Relaxed);
    }
}

/// Tasks aborted with their space's entry.
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Drop for Tasks {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// The node's fan-out: see the module documentation.
pub struct Fanout {
    spaces: Mutex<HashMap<String, Arc<Entry>>>,
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Store>,
    bytes: Arc<AtomicUsize>,
    next_id: AtomicU64,
    /// Frames taken from the ring and from the database, for tests and metrics.
    pub stats: Stats,
}

/// Counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Frames sockets took from rings.
    pub ring_frames: AtomicU64,
    /// Database pages read for sockets (behind the ring or filling it).
    pub db_reads: AtomicU64,
}

impl Fanout {
    /// A fan-out over `bus`, reading `store` where rings fall short.
    pub fn new(bus: Arc<dyn EventBus>, store: Arc<dyn Store>) -> Arc<Fanout> {
        Arc::new(Fanout {
            spaces: Mutex::default(),
            bus,
            store,
            bytes: Arc::default(),
            next_id: AtomicU64::new(1),
            stats: Stats::default(),
        })
    }

    fn map(&self) -> MutexGuard<'_, HashMap<String, Arc<Entry>>> {
        self.spaces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The commit listener: frames for the watched spaces among `events`
    /// (committed by this node, ordered by space and seq), and wake-ups.
    pub fn committed(&self, events: &[Event]) {
        let entries: Vec<Option<Arc<Entry>>> = {
            let map = self.map();
            if map.is_empty() {
                return;
            }
            events.iter().map(|e| map.get(&e.space_id).cloned()).collect()
        };
        let mut added = 0isize;
        for (e, entry) in events.iter().zip(entries) {
            let Some(entry) = entry else { continue };
            let frame = Arc::new(Frame::of(e));
            let mut st = entry.lock();
            added += st.ring.insert(frame);
            st.written = Instant::now();
            if e.seq > st.notified {
                st.notified = e.seq;
                for w in st.watchers.values() {
                    w.space(&entry.id, e.seq);
                }
            }
        }
        self.account(added);
    }

    fn account(&self, delta: isize) {
        // An eviction on another thread may subtract a frame's bytes before its
        // addition is counted: the counter then wraps below zero for a moment
        // (the atomics wrap; so must this arithmetic) and comes back. Read such
        // a transient value as "under budget".
        let total = if delta >= 0 {
            self.bytes.fetch_add(delta as usize, Ordering::Relaxed).wrapping_add(delta as usize)
        } else {
            self.bytes.fetch_sub(delta.unsigned_abs(), Ordering::Relaxed).wrapping_sub(delta.unsigned_abs())
        };
        if total <= isize::MAX as usize && total > RING_BUDGET {
            self.evict();
        }
    }

    /// Empties the rings written longest ago until a quarter of the budget is free.
    fn evict(&self) {
        let mut entries: Vec<(Instant, Arc<Entry>)> =
            self.map().values().map(|e| (e.lock().written, e.clone())).collect();
        entries.sort_by_key(|(t, _)| *t);
        for (_, e) in entries {
            if self.bytes.load(Ordering::Relaxed) <= RING_BUDGET / 4 * 3 {
                break;
            }
            let freed = e.lock().ring.clear();
            self.bytes.fetch_sub(freed, Ordering::Relaxed);
        }
    }

    /// Watches `space` for `signal`'s socket: when this returns, every event
    /// committed afterwards, by any node, wakes the signal. Dropping the
    /// [`Watch`] stops it.
    pub async fn watch(self: &Arc<Self>, space: &str, signal: &Arc<Signal>) -> Result<Watch, BusError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let entry = {
            let mut map = self.map();
            let entry = map
                .entry(space.to_owned())
                .or_insert_with(|| {
                    Arc::new(Entry {
                        id: space.to_owned(),
                        bytes: self.bytes.clone(),
                        state: Mutex::new(State {
                            ring: Ring::default(),
                            watchers: HashMap::new(),
                            notified: 0,
                            receipts: HashMap::new(),
                            written: Instant::now(),
                        }),
                        fill: tokio::sync::Mutex::new(()),
                        live: tokio::sync::OnceCell::new(),
                    })
                })
                .clone();
            entry.lock().watchers.insert(id, signal.clone());
            entry
        };
        // From here on, dropping the watch (e.g. on error) undoes the registration.
        let watch = Watch { fanout: self.clone(), entry, id };
        let entry = &watch.entry;
        entry.live.get_or_try_init(|| self.start(entry)).await?;
        Ok(watch)
    }

    /// The first watcher of a space: subscribe (events, receipts), read the
    /// markers as they stand, and follow both channels.
    async fn start(self: &Arc<Self>, entry: &Arc<Entry>) -> Result<Tasks, BusError> {
        let events = self.bus.subscribe(&entry.id).await?;
        let receipts = self.bus.subscribe(&receipts_channel(&entry.id)).await?;
        match self.store.read_markers(&entry.id).await {
            Ok(m) => entry.lock().receipts = m.into_iter().map(|m| (m.user_id, m.seq)).collect(),
            Err(e) => tracing::warn!(error = %e, "reading read markers failed"),
        }
        let weak = Arc::downgrade(entry);
        let bus = self.bus.clone();
        let follow_events = tokio::spawn(follow_events(bus.clone(), weak.clone(), entry.id.clone(), events));
        let follow_receipts = tokio::spawn(follow_receipts(bus, self.store.clone(), weak, entry.id.clone(), receipts));
        Ok(Tasks(vec![follow_events, follow_receipts]))
    }

    /// Number of spaces watched on this node.
    pub fn watched(&self) -> usize {
        self.map().len()
    }
}

/// A bus subscription to `channel`, retried until it works.
async fn resubscribe(bus: &Arc<dyn EventBus>, channel: &str) -> core_bus::Subscription {
    let mut pause = Duration::from_millis(50);
    loop {
        tokio::time::sleep(pause).await;
        match bus.subscribe(channel).await {
            Ok(s) => return s,
            Err(e) => tracing::warn!(error = %e, "subscribing again failed"),
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
}

/// Bus notices of a space → wake-ups of its watchers.
async fn follow_events(bus: Arc<dyn EventBus>, entry: Weak<Entry>, space: String, mut sub: core_bus::Subscription) {
    loop {
        match sub.next().await {
            Some(n) => {
                let Some(e) = entry.upgrade() else { return };
                e.notify(n.seq);
            }
            None => {
                // The transport dropped the subscription: notices were lost.
                sub = resubscribe(&bus, &space).await;
                let Some(e) = entry.upgrade() else { return };
                e.notify_check_db();
            }
        }
    }
}

/// Receipt notices of a space → the markers that moved, from the database,
/// to the watchers of other users.
async fn follow_receipts(
    bus: Arc<dyn EventBus>,
    store: Arc<dyn Store>,
    entry: Weak<Entry>,
    space: String,
    mut sub: core_bus::Subscription,
) {
    use futures_util::FutureExt;
    loop {
        if sub.next().await.is_none() {
            sub = resubscribe(&bus, &receipts_channel(&space)).await;
        }
        // One read for every notice already queued.
        while let Some(Some(_)) = sub.next().now_or_never() {}
        let markers = match store.read_markers(&space).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "reading read markers failed");
                continue;
            }
        };
        let Some(entry) = entry.upgrade() else { return };
        let mut st = entry.lock();
        for m in markers {
            // Markers never move back: greater is exactly "moved".
            if st.receipts.get(&m.user_id).is_some_and(|s| *s >= m.seq) {
                continue;
            }
            st.receipts.insert(m.user_id.clone(), m.seq);
            for w in st.watchers.values().filter(|w| w.user != m.user_id) {
                w.receipt(&space, &m.user_id, m.seq);
            }
        }
    }
}

/// One socket watching one space. Dropping it stops the watch.
pub struct Watch {
    fanout: Arc<Fanout>,
    entry: Arc<Entry>,
    id: u64,
}

impl Watch {
    /// What the ring holds right after `from` (at most `max` frames).
    pub fn after(&self, from: i64, max: usize) -> After {
        let got = self.entry.lock().ring.after(from, max);
        if let After::Frames(f) = &got {
            self.fanout.stats.ring_frames.fetch_add(f.len() as u64, Ordering::Relaxed);
        }
        got
    }

    /// The events after `from`, through the ring: if it does not have the
    /// next one, one socket of this node reads a page from the database into
    /// it while the others wait, then take it from there. Empty: nothing
    /// committed after `from`.
    pub async fn fill(&self, from: i64) -> Result<Vec<Arc<Frame>>, StoreError> {
        let _one_reader = self.entry.fill.lock().await;
        if let After::Frames(f) = self.after(from, PAGE as usize) {
            return Ok(f);
        }
        let page = self.fanout.store.events_after(&self.entry.id, from, PAGE).await?;
        self.fanout.stats.db_reads.fetch_add(1, Ordering::Relaxed);
        let frames: Vec<Arc<Frame>> = page.iter().map(|e| Arc::new(Frame::of(e))).collect();
        let mut added = 0;
        {
            let mut st = self.entry.lock();
            for f in &frames {
                added += st.ring.insert(f.clone());
            }
        }
        self.fanout.account(added);
        Ok(frames)
    }

    /// The events after `from` from the database, for a socket behind the ring.
    pub async fn read(&self, from: i64) -> Result<Vec<Arc<Frame>>, StoreError> {
        let page = self.fanout.store.events_after(&self.entry.id, from, PAGE).await?;
        self.fanout.stats.db_reads.fetch_add(1, Ordering::Relaxed);
        Ok(page.iter().map(|e| Arc::new(Frame::of(e))).collect())
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        let mut map = self.fanout.map();
        let empty = {
            let mut st = self.entry.lock();
            st.watchers.remove(&self.id);
            st.watchers.is_empty()
        };
        if empty && map.get(&self.entry.id).is_some_and(|e| Arc::ptr_eq(e, &self.entry)) {
            // The entry (its ring, its bus subscriptions) goes with its last holder.
            map.remove(&self.entry.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(seq: i64) -> Arc<Frame> {
        Arc::new(Frame { seq, kind: EventKind::Message, subject: None, text: format!("f{seq}").into() })
    }

    fn seqs(a: After) -> Option<Vec<i64>> {
        match a {
            After::Frames(f) => Some(f.iter().map(|f| f.seq).collect()),
            After::Behind => None,
            After::Nothing => Some(vec![]),
        }
    }

    #[test]
    fn a_ring_hands_out_only_gap_free_runs() {
        let mut r = Ring::default();
        assert_eq!(seqs(r.after(0, 10)), Some(vec![]));
        for s in [5, 6, 8] {
            r.insert(frame(s));
        }
        assert_eq!(seqs(r.after(3, 10)), None, "behind the ring");
        assert_eq!(seqs(r.after(4, 10)), Some(vec![5, 6]), "up to the hole");
        assert_eq!(seqs(r.after(6, 10)), Some(vec![]), "the hole");
        r.insert(frame(7));
        assert_eq!(seqs(r.after(4, 10)), Some(vec![5, 6, 7, 8]));
        assert_eq!(seqs(r.after(4, 2)), Some(vec![5, 6]));
        assert_eq!(seqs(r.after(8, 10)), Some(vec![]));
        // Just before the start extends it; further back is ignored.
        r.insert(frame(4));
        r.insert(frame(2));
        assert_eq!(seqs(r.after(3, 10)), Some(vec![4, 5, 6, 7, 8]));
        assert_eq!(seqs(r.after(2, 10)), None);
        // Inserting twice changes nothing.
        assert_eq!(r.insert(frame(6)), 0);
    }

    #[test]
    fn a_ring_keeps_the_latest_frames() {
        let mut r = Ring::default();
        let mut bytes = 0;
        for s in 1..=(RING_CAPACITY as i64 + 10) {
            bytes += r.insert(frame(s));
        }
        assert_eq!(r.slots.len(), RING_CAPACITY);
        assert_eq!(r.base, 11);
        assert_eq!(bytes as usize, r.bytes);
        assert_eq!(seqs(r.after(9, 1)), None);
        assert_eq!(seqs(r.after(10, 1)), Some(vec![11]));
        // A far jump ahead starts afresh.
        let before = r.bytes as isize;
        assert_eq!(r.insert(frame(10_000)), 6 - before);
        assert_eq!(r.slots.len(), 1);
        assert_eq!(seqs(r.after(9_998, 5)), None);
        assert_eq!(seqs(r.after(9_999, 5)), Some(vec![10_000]));
        r.insert(frame(10_002));
        assert_eq!(seqs(r.after(9_999, 5)), Some(vec![10_000]));
        let held = r.bytes;
        assert_eq!(held, r.slots.iter().flatten().map(|f| f.text.len()).sum::<usize>());
        assert_eq!(r.clear(), held);
    }

    #[test]
    fn frames_are_the_event_as_sent() {
        let e = Event {
            space_id: "s".into(),
            seq: 3,
            id: "e".into(),
            client_event_id: None,
            kind: EventKind::MemberRemoved,
            sender: "a@x".into(),
            parent: None,
            target: None,
            subject: Some("b@x".into()),
            ciphertext: None,
            key_uri: None,
            meta: None,
            create_date: 1,
        };
        let f = Frame::of(&e);
        let v: serde_json::Value = serde_json::from_str(&f.text).unwrap();
        assert_eq!(v["type"], "event");
        assert_eq!(serde_json::from_value::<Event>(v["event"].clone()).unwrap(), e);
        assert_eq!((f.seq, f.kind, f.subject.as_deref()), (3, EventKind::MemberRemoved, Some("b@x")));
    }
}
