//! One WebSocket per client: the events of all its spaces, live.
//!
//! Protocol (JSON text frames). The client opens with
//! `{"type":"hello","token":"<bearer>","since":{"<space id>": <seq>, …}}`
//! (or sends the token as `Authorization: Bearer` on the upgrade and
//! `{"type":"hello","since":{…}}`). The core answers `{"type":"ready"}` and
//! then:
//!
//! - `{"type":"event","event":{…}}` for every event after `since` (spaces
//!   not named start at their latest event), in order per space, including
//!   spaces the user joins later. A member's removal is the last event of
//!   the space their sockets get (until they are added again).
//! - `{"type":"read_marker","space":…,"user":…,"seq":…}` when a read marker
//!   of the space moves: the user's own (set on another device) and, as read
//!   receipts, those of the other members. A receipt is not part of the
//!   space's event stream (it takes no sequence number and is not in the
//!   history): it comes after the event it points at, never before, and
//!   several moves of one marker may arrive as the last one only. The
//!   markers as they stand are in `GET /v1/spaces/{id}` (`read_markers`).
//! - `{"type":"kms","id":…,"domain":…,"message":…}` relays a KMS message to
//!   the user's own org's KMS, within the same per-caller limits as
//!   `POST /kms/<domain>/messages`; the answer comes back as
//!   `{"type":"kms","id":…,"status":…,"message":…}`, or
//!   `{"type":"kms","id":…,"status":…,"error":…,"reason":…}` when the core
//!   refuses it (`kms_not_your_org`; `relay_throttled` with `retry_after`
//!   in seconds).
//!
//! Delivery (see [`crate::fanout`]): a socket is woken with "space X has
//! events up to N" and sends the frames the node serialized once for all
//! its sockets; it reads the database itself only when it is behind what
//! the node keeps, or when the events came from another node.
//!
//! Backpressure: a socket's task sends as fast as the client takes frames
//! (tungstenite buffers a bounded amount); a slow client falls behind the node's ring
//! and then reads its own pages from the database, so it costs memory for
//! one page, not a queue of everything it missed.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use core_store::EventKind;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::mpsc;

use crate::fanout::{After, Frame, Signal, Watch, CHECK_DB, PAGE};
use crate::notices::user_channel;
use crate::relay::Relay;
use crate::service::{Caller, Core};
use crate::state::AppState;

/// Read buffer per socket. tungstenite zero-fills the whole buffer before
/// each read attempt, and the socket's task polls for client frames each
/// time it wakes up to deliver: with the default 128 KiB, that fill was a
/// tenth of the core's CPU under load. Clients send little (hello, pings,
/// KMS messages); a larger frame still arrives, in more reads.
const READ_BUFFER: usize = 4096;
/// How many pages back a socket looks for the start of a membership it just learned of.
const JOIN_SCAN_PAGES: usize = 10;

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum ClientFrame {
    Hello {
        #[serde(default)]
        token: Option<String>,
        #[serde(default)]
        since: HashMap<String, i64>,
    },
    Kms {
        id: String,
        domain: String,
        message: String,
    },
    Ping,
}

/// `GET /v1/ws`: the protocol is this module's.
#[utoipa::path(get, path = "/v1/ws", security(()), description = "One WebSocket per client: the events of all its spaces, live, and KMS messages relayed. The token comes in the `hello` frame (or as `Authorization: Bearer` on the upgrade). Frames are JSON text; see the core's `ws` module.", responses((status = 101, description = "Switching to the WebSocket protocol")))]
pub async fn upgrade(State(state): State<AppState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    // Browsers apply no CORS to WebSockets: a page of another origin could
    // open one. They always send `Origin`; only the orgs' web origins pass.
    if let Some(origin) = headers.get(header::ORIGIN) {
        let allowed = origin.to_str().is_ok_and(|o| state.core.cfg.allows_web_origin(o));
        if !allowed {
            use axum::response::IntoResponse as _;
            return crate::error::ApiError::forbidden("origin", "this origin is not one of the orgs' web origins")
                .into_response();
        }
    }
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::to_string);
    ws.max_message_size(kms_protocol::channel::MAX_MESSAGE_LEN * 2)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |s| serve(state, s, token))
}

fn text(v: serde_json::Value) -> Utf8Bytes {
    v.to_string().into()
}

async fn serve(state: AppState, socket: WebSocket, header_token: Option<String>) {
    let AppState { core, relay } = state;
    let (sink, mut rx) = socket.split();

    // Hello within 10 s.
    let hello = tokio::time::timeout(Duration::from_secs(10), rx.next()).await;
    let (token, since) = match hello {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ClientFrame>(&t) {
            Ok(ClientFrame::Hello { token, since }) => (token.or(header_token), since),
            _ => return bye(sink, "expected a hello frame").await,
        },
        _ => return bye(sink, "expected a hello frame").await,
    };
    let Some(token) = token else { return bye(sink, "a bearer token is required").await };
    let caller = match core.authenticate(&token).await {
        Ok(c) => c,
        Err(e) => return bye(sink, &e.message).await,
    };
    drop(token);
    metrics::gauge!("core_sockets").increment(1.0);
    let (replies, replies_rx) = mpsc::channel(RELAY_IN_FLIGHT);
    let signal = Signal::new(&caller.user_id);
    let mut session = Socket {
        relays: Arc::new(tokio::sync::Semaphore::new(RELAY_IN_FLIGHT)),
        relay,
        core: core.clone(),
        caller,
        sink,
        unflushed: false,
        replies,
        signal,
    };
    session.run(since, &mut rx, replies_rx).await;
    metrics::gauge!("core_sockets").decrement(1.0);
    let _ = session.sink.close().await;
}

async fn bye(mut sink: Sink, why: &str) {
    let _ = sink.send(Message::Text(text(json!({"type": "error", "message": why})))).await;
    let _ = sink.close().await;
}

/// Relayed KMS messages one socket may have waiting at once.
const RELAY_IN_FLIGHT: usize = 32;

/// The sending half of a socket.
type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

struct Socket {
    /// Relayed KMS messages in flight.
    relays: Arc<tokio::sync::Semaphore>,
    relay: Arc<Relay>,
    core: Arc<Core>,
    caller: Caller,
    /// Written by this task only: frames are fed as they come and flushed
    /// once per wake-up (one system call for all of them). tungstenite's
    /// write buffer is bounded: a client that does not read makes `feed`
    /// wait, which is the backpressure.
    sink: Sink,
    unflushed: bool,
    /// Answers of relayed KMS messages, from their own tasks.
    replies: mpsc::Sender<Utf8Bytes>,
    signal: Arc<Signal>,
}

/// Where a socket stands.
#[derive(Default)]
struct Progress {
    /// The spaces it delivers (the user is a member), and the last seq sent.
    delivered: HashMap<String, i64>,
    /// Their watches.
    watches: HashMap<String, Watch>,
    /// The user's own read markers, as last sent.
    markers: HashMap<String, i64>,
    /// Others' read markers not yet sent: they wait for their event.
    held: HashMap<String, HashMap<String, i64>>,
}

/// How a drain ended.
enum Drained {
    /// Up to date (or the database failed; the next wake-up tries again).
    Done,
    /// The socket's own removal was the last frame: stop delivering the space.
    Removed,
    /// The client is gone.
    Gone,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Socket {
    async fn send(&mut self, t: Utf8Bytes) -> bool {
        self.unflushed = true;
        self.sink.feed(Message::Text(t)).await.is_ok()
    }

    async fn flush(&mut self) -> bool {
        if !self.unflushed {
            return true;
        }
        self.unflushed = false;
        self.sink.flush().await.is_ok()
    }

    async fn watch(&self, space: &str, p: &mut Progress) {
        match self.core.fanout.watch(space, &self.signal).await {
            Ok(w) => {
                p.watches.insert(space.to_owned(), w);
            }
            // Delivered from the database when woken otherwise (joins, reconnects).
            Err(e) => tracing::warn!(error = %e, "watching a space failed"),
        }
    }

    async fn run(
        &mut self,
        since: HashMap<String, i64>,
        rx: &mut futures_util::stream::SplitStream<WebSocket>,
        mut replies: mpsc::Receiver<Utf8Bytes>,
    ) {
        let mut p = Progress::default();
        // The user's channel: spaces joined, own read markers moved.
        let _user = match self.core.bus.subscribe(&user_channel(&self.caller.user_id)).await {
            Ok(mut sub) => {
                let signal = self.signal.clone();
                Some(AbortOnDrop(tokio::spawn(async move {
                    while sub.next().await.is_some() {
                        signal.joins();
                    }
                })))
            }
            Err(e) => {
                tracing::warn!(error = %e, "subscribing failed");
                None
            }
        };
        let Ok(spaces) = self.core.store.spaces_of(&self.caller.user_id).await else { return };
        p.markers = spaces.iter().map(|s| (s.space.id.clone(), s.read_seq)).collect();
        for s in spaces {
            let from = since.get(&s.space.id).copied().unwrap_or(s.space.last_seq);
            p.delivered.insert(s.space.id.clone(), from.max(0));
            self.watch(&s.space.id, &mut p).await;
            self.signal.space(&s.space.id, CHECK_DB);
        }
        if !self.send(text(json!({"type": "ready"}))).await {
            return;
        }
        let signal = self.signal.clone();
        loop {
            if !self.flush().await {
                break;
            }
            tokio::select! {
                frame = rx.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    match frame {
                        Message::Text(t) if !self.client_frame(&t).await => break,
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                _ = signal.woken() => {
                    if !self.wake(&mut p).await {
                        break;
                    }
                }
                Some(reply) = replies.recv() => {
                    if !self.send(reply).await {
                        break;
                    }
                }
            }
        }
    }

    /// Does what the socket was woken for; false when the client is gone.
    async fn wake(&mut self, p: &mut Progress) -> bool {
        let pending = self.signal.take();
        if pending.joins && !self.joins(p).await {
            return false;
        }
        for (space, target) in pending.spaces {
            match self.drain(&space, target, p).await {
                Drained::Done => {}
                Drained::Gone => return false,
                Drained::Removed => {
                    // Nothing after this reaches the former member.
                    p.delivered.remove(&space);
                    p.watches.remove(&space);
                    p.held.remove(&space);
                    // Unless re-added since: the join notice may have been handled
                    // while the space was still delivered, so look again.
                    self.signal.joins();
                }
            }
        }
        for (space, users) in pending.receipts {
            let held = p.held.entry(space).or_default();
            for (user, seq) in users {
                let s = held.entry(user).or_insert(seq);
                *s = (*s).max(seq);
            }
        }
        self.receipts(p).await
    }

    /// The user's channel: joined spaces (watch them from just before the
    /// join) and read markers moved on another device.
    async fn joins(&mut self, p: &mut Progress) -> bool {
        let Ok(all) = self.core.store.spaces_of(&self.caller.user_id).await else { return true };
        for s in &all {
            if p.markers.get(&s.space.id).is_some_and(|m| *m != s.read_seq) {
                p.markers.insert(s.space.id.clone(), s.read_seq);
                let f =
                    json!({"type": "read_marker", "space": s.space.id, "user": self.caller.user_id, "seq": s.read_seq});
                if !self.send(text(f)).await {
                    return false;
                }
            }
        }
        for s in all {
            p.markers.entry(s.space.id.clone()).or_insert(s.read_seq);
            if !p.delivered.contains_key(&s.space.id) {
                // From the join itself: more may have been posted since.
                let from = self.join_point(&s.space.id, s.space.last_seq).await;
                p.delivered.insert(s.space.id.clone(), from);
                self.watch(&s.space.id, p).await;
                self.signal.space(&s.space.id, CHECK_DB);
            }
        }
        true
    }

    /// Sends the events of `space` after the last one sent, at least up to
    /// `target` ([`CHECK_DB`]: until the database has nothing more).
    async fn drain(&mut self, space: &str, target: i64, p: &mut Progress) -> Drained {
        let Some(mut from) = p.delivered.get(space).copied() else { return Drained::Done };
        let watch = p.watches.get(space);
        let mut outcome = Drained::Done;
        'pages: loop {
            let frames: Vec<Arc<Frame>> = match watch {
                Some(w) => match w.after(from, PAGE as usize) {
                    After::Frames(f) => f,
                    After::Behind => w.read(from).await.unwrap_or_default(),
                    After::Nothing if target != CHECK_DB && from >= target => break,
                    After::Nothing => w.fill(from).await.unwrap_or_default(),
                },
                None => match self.core.store.events_after(space, from, PAGE).await {
                    Ok(page) => page.iter().map(|e| Arc::new(Frame::of(e))).collect(),
                    Err(_) => Vec::new(),
                },
            };
            if frames.is_empty() {
                break;
            }
            for f in frames {
                from = f.seq;
                if !self.send(f.text.clone()).await {
                    return Drained::Gone;
                }
                metrics::counter!("core_deliveries_total").increment(1);
                if f.kind == EventKind::MemberRemoved && f.subject.as_deref() == Some(self.caller.user_id.as_str()) {
                    outcome = Drained::Removed;
                    break 'pages;
                }
            }
        }
        p.delivered.insert(space.to_owned(), from);
        outcome
    }

    /// Sends the other members' read markers whose event this socket has
    /// sent; keeps the others for later; drops those of spaces it no longer
    /// delivers.
    async fn receipts(&mut self, p: &mut Progress) -> bool {
        if p.held.is_empty() {
            return true;
        }
        for (space, users) in std::mem::take(&mut p.held) {
            let Some(&upto) = p.delivered.get(&space) else { continue };
            let mut later = HashMap::new();
            for (user, seq) in users {
                if seq > upto {
                    later.insert(user, seq);
                } else if !self
                    .send(text(json!({"type": "read_marker", "space": space, "user": user, "seq": seq})))
                    .await
                {
                    return false;
                }
            }
            if !later.is_empty() {
                p.held.insert(space, later);
            }
        }
        true
    }

    /// The sequence number just before the caller's current membership of
    /// `space` began: walking back from the end, the earliest `MemberAdded` of
    /// the caller after their latest `MemberRemoved`. Falls back to just
    /// before the last event if the join is further back than a few pages.
    async fn join_point(&self, space: &str, last_seq: i64) -> i64 {
        let me = Some(self.caller.user_id.as_str());
        let mut start = None;
        let mut before = last_seq + 1;
        'pages: for _ in 0..JOIN_SCAN_PAGES {
            let Ok(page) = self.core.store.events_before(space, before, PAGE).await else { break };
            let Some(oldest) = page.last().map(|e| e.seq) else { break };
            for e in page {
                if e.subject.as_deref() == me {
                    match e.kind {
                        EventKind::MemberAdded => start = Some(e.seq),
                        EventKind::MemberRemoved => break 'pages,
                        _ => {}
                    }
                }
            }
            before = oldest;
        }
        start.map_or((last_seq - 1).max(0), |s| s - 1)
    }

    /// Handles a frame from the client; false when the client is gone.
    async fn client_frame(&mut self, text_frame: &str) -> bool {
        match serde_json::from_str::<ClientFrame>(text_frame) {
            Ok(ClientFrame::Ping) => self.send(text(json!({"type": "pong"}))).await,
            Ok(ClientFrame::Kms { id, domain, message }) => {
                // At most RELAY_IN_FLIGHT relayed messages per socket wait for a KMS at once.
                let Ok(permit) = self.relays.clone().try_acquire_owned() else {
                    let f = json!({"type": "kms", "id": id, "status": 429, "error": "too_many_in_flight", "reason": "too many KMS messages in flight on this socket"});
                    return self.send(text(f)).await;
                };
                let (core, relay, caller, replies) =
                    (self.core.clone(), self.relay.clone(), self.caller.clone(), self.replies.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let relayed = crate::relay::forward(&relay, &core.cfg, &caller, &domain, "application/jose", message.into());
                    let reply = match relayed.await {
                        Ok((status, _, body)) => {
                            json!({"type": "kms", "id": id, "status": status.as_u16(), "message": String::from_utf8_lossy(&body)})
                        }
                        Err(e) => {
                            let mut f = json!({"type": "kms", "id": id, "status": e.status.as_u16(), "error": e.code, "reason": e.message});
                            if let Some(secs) = e.retry_after {
                                f["retry_after"] = secs.into();
                            }
                            f
                        }
                    };
                    let _ = replies.send(text(reply)).await;
                });
                true
            }
            Ok(ClientFrame::Hello { .. }) | Err(_) => {
                self.send(text(json!({"type": "error", "message": "unexpected frame"}))).await
            }
        }
    }
}
