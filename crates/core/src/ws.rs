//! One WebSocket per client: the events of all its spaces, live.
//!
//! Protocol (JSON text frames). The client opens with
//! `{"type":"hello","token":"<bearer>","since":{"<space id>": <seq>, …}}`
//! (or sends the token as `Authorization: Bearer` on the upgrade and
//! `{"type":"hello","since":{…}}`). The core answers `{"type":"ready"}` and
//! then `{"type":"event","event":{…}}` for every event after `since` (spaces
//! not named start at their latest event), in order per space, including
//! spaces the user joins later, and `{"type":"read_marker","space":…,"seq":…}`
//! when the user's read marker moves (on another device). `{"type":"kms","id":…,"domain":…,"message":…}`
//! relays a KMS message; the answer comes back as
//! `{"type":"kms","id":…,"status":…,"message":…}`.
//!
//! Backpressure: notices only mark a space dirty; the socket's own task reads
//! new events from the database as fast as the client takes them, so a slow
//! client costs memory for one page, not a queue of everything it missed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::Response;
use core_store::EventKind;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{mpsc, Notify};

use crate::api::AppState;
use crate::service::{Caller, Core};

/// Events sent per database read.
const PAGE: u32 = 200;
/// Frames queued for one socket before the reader waits for the client.
const OUTBOUND: usize = 256;
/// The dirty-set entry for the user's own channel (joins, read markers).
const JOINS: &str = "\u{0}joins";
/// How many pages back a socket looks for the start of a membership it just learned of.
const JOIN_SCAN_PAGES: usize = 10;

/// The per-user channel on the bus: spaces the user joins. A hash, so that
/// user ids do not travel on the bus.
pub fn user_channel(user_id: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, user_id.as_bytes());
    format!("u-{}", d.as_ref().iter().take(16).map(|b| format!("{b:02x}")).collect::<String>())
}

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

/// `GET /v1/ws`.
pub async fn upgrade(State(core): State<AppState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|h| h.strip_prefix("Bearer ").or_else(|| h.strip_prefix("bearer ")))
        .map(str::to_string);
    ws.max_message_size(kms_protocol::channel::MAX_MESSAGE_LEN * 2).on_upgrade(move |s| serve(core, s, token))
}

async fn serve(core: Arc<Core>, socket: WebSocket, header_token: Option<String>) {
    let (mut tx, mut rx) = socket.split();
    let (out, mut out_rx) = mpsc::channel::<String>(OUTBOUND);
    let writer = tokio::spawn(async move {
        while let Some(m) = out_rx.recv().await {
            if tx.send(Message::Text(m.into())).await.is_err() {
                break;
            }
        }
        let _ = tx.close().await;
    });

    // Hello within 10 s.
    let hello = tokio::time::timeout(Duration::from_secs(10), rx.next()).await;
    let (token, since) = match hello {
        Ok(Some(Ok(Message::Text(t)))) => match serde_json::from_str::<ClientFrame>(&t) {
            Ok(ClientFrame::Hello { token, since }) => (token.or(header_token), since),
            _ => return bye(out, writer, "expected a hello frame").await,
        },
        _ => return bye(out, writer, "expected a hello frame").await,
    };
    let Some(token) = token else { return bye(out, writer, "a bearer token is required").await };
    let caller = match core.authenticate(&token).await {
        Ok(c) => c,
        Err(e) => return bye(out, writer, &e.message).await,
    };
    drop(token);
    metrics::gauge!("core_sockets").increment(1.0);
    let session = Socket { relays: Arc::new(tokio::sync::Semaphore::new(RELAY_IN_FLIGHT)), core: core.clone(), caller, out: out.clone(), dirty: Arc::new(Mutex::new(HashSet::new())), wake: Arc::new(Notify::new()) };
    session.run(since, &mut rx).await;
    metrics::gauge!("core_sockets").decrement(1.0);
    drop(session);
    drop(out);
    let _ = writer.await;
}

async fn bye(out: mpsc::Sender<String>, writer: tokio::task::JoinHandle<()>, why: &str) {
    let _ = out.send(json!({"type": "error", "message": why}).to_string()).await;
    drop(out);
    let _ = writer.await;
}

/// Relayed KMS messages one socket may have waiting at once.
const RELAY_IN_FLIGHT: usize = 32;

struct Socket {
    relays: Arc<tokio::sync::Semaphore>,
    core: Arc<Core>,
    caller: Caller,
    out: mpsc::Sender<String>,
    dirty: Arc<Mutex<HashSet<String>>>,
    wake: Arc<Notify>,
}

impl Socket {
    /// Subscribes to `channel`; every notice marks `space` dirty and wakes the socket.
    async fn watch(&self, channel: &str, space: &str) -> Option<tokio::task::JoinHandle<()>> {
        let mut sub = match self.core.bus.subscribe(channel).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "subscribing failed");
                return None;
            }
        };
        let (dirty, wake, space) = (self.dirty.clone(), self.wake.clone(), space.to_string());
        Some(tokio::spawn(async move {
            while sub.next().await.is_some() {
                dirty.lock().expect("not poisoned").insert(space.clone());
                wake.notify_one();
            }
        }))
    }

    async fn run(&self, since: HashMap<String, i64>, rx: &mut futures_util::stream::SplitStream<WebSocket>) {
        let mut delivered: HashMap<String, i64> = HashMap::new();
        let mut watches: HashMap<String, tokio::task::JoinHandle<()>> = HashMap::new();
        if let Some(h) = self.watch(&user_channel(&self.caller.user_id), JOINS).await {
            watches.insert(JOINS.into(), h);
        }
        let Ok(spaces) = self.core.store.spaces_of(&self.caller.user_id).await else { return };
        let mut markers: HashMap<String, i64> = spaces.iter().map(|s| (s.space.id.clone(), s.read_seq)).collect();
        for s in spaces {
            let from = since.get(&s.space.id).copied().unwrap_or(s.space.last_seq);
            delivered.insert(s.space.id.clone(), from.max(0));
            if let Some(h) = self.watch(&s.space.id, &s.space.id).await {
                watches.insert(s.space.id.clone(), h);
            }
            self.dirty.lock().expect("not poisoned").insert(s.space.id.clone());
        }
        if self.out.send(json!({"type": "ready"}).to_string()).await.is_err() {
            return;
        }
        self.wake.notify_one();
        loop {
            tokio::select! {
                frame = rx.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    match frame {
                        Message::Text(t) => self.client_frame(&t).await,
                        Message::Close(_) => break,
                        _ => {}
                    }
                }
                _ = self.wake.notified() => {
                    let spaces: Vec<String> = self.dirty.lock().expect("not poisoned").drain().collect();
                    for space in spaces {
                        if space == JOINS {
                            // The user's channel: joined spaces (watch them from just before
                            // the join) and read markers moved on another device.
                            let Ok(all) = self.core.store.spaces_of(&self.caller.user_id).await else { continue };
                            for s in &all {
                                if markers.get(&s.space.id).is_some_and(|m| *m != s.read_seq) {
                                    markers.insert(s.space.id.clone(), s.read_seq);
                                    let f = json!({"type": "read_marker", "space": s.space.id, "seq": s.read_seq});
                                    if self.out.send(f.to_string()).await.is_err() {
                                        return;
                                    }
                                }
                            }
                            for s in all {
                                markers.entry(s.space.id.clone()).or_insert(s.read_seq);
                                if !delivered.contains_key(&s.space.id) {
                                    // From the join itself: more may have been posted since.
                                    delivered.insert(s.space.id.clone(), self.join_point(&s.space.id, s.space.last_seq).await);
                                    if let Some(h) = self.watch(&s.space.id, &s.space.id).await {
                                        watches.insert(s.space.id.clone(), h);
                                    }
                                    self.dirty.lock().expect("not poisoned").insert(s.space.id.clone());
                                    self.wake.notify_one();
                                }
                            }
                            continue;
                        }
                        if !self.drain(&space, &mut delivered, &mut watches).await {
                            return;
                        }
                    }
                }
            }
        }
        for (_, h) in watches {
            h.abort();
        }
    }

    /// Sends everything new in `space`; false when the client is gone.
    async fn drain(&self, space: &str, delivered: &mut HashMap<String, i64>, watches: &mut HashMap<String, tokio::task::JoinHandle<()>>) -> bool {
        let Some(mut from) = delivered.get(space).copied() else { return true };
        loop {
            let Ok(page) = self.core.store.events_after(space, from, PAGE).await else { return true };
            if page.is_empty() {
                break;
            }
            for e in page {
                from = e.seq;
                let removed = e.kind == EventKind::MemberRemoved && e.subject.as_deref() == Some(self.caller.user_id.as_str());
                if self.out.send(json!({"type": "event", "event": e}).to_string()).await.is_err() {
                    return false;
                }
                metrics::counter!("core_deliveries_total").increment(1);
                if removed {
                    // Removed: nothing after this reaches the former member.
                    delivered.remove(space);
                    if let Some(h) = watches.remove(space) {
                        h.abort();
                    }
                    // Unless re-added since: the join notice may have been handled
                    // while the space was still watched, so look again.
                    self.dirty.lock().expect("not poisoned").insert(JOINS.into());
                    self.wake.notify_one();
                    return true;
                }
            }
        }
        delivered.insert(space.to_string(), from);
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

    async fn client_frame(&self, text: &str) {
        match serde_json::from_str::<ClientFrame>(text) {
            Ok(ClientFrame::Ping) => {
                let _ = self.out.send(json!({"type": "pong"}).to_string()).await;
            }
            Ok(ClientFrame::Kms { id, domain, message }) => {
                // At most RELAY_IN_FLIGHT relayed messages per socket wait for a KMS at once.
                let Ok(permit) = self.relays.clone().try_acquire_owned() else {
                    let f = json!({"type": "kms", "id": id, "status": 429, "error": "too_many_in_flight", "reason": "too many KMS messages in flight on this socket"});
                    let _ = self.out.send(f.to_string()).await;
                    return;
                };
                let (core, out) = (self.core.clone(), self.out.clone());
                tokio::spawn(async move {
                    let _permit = permit;
                    let reply = match crate::relay::forward(&core, &domain, "application/jose", message.into()).await {
                        Ok((status, _, body)) => json!({"type": "kms", "id": id, "status": status.as_u16(), "message": String::from_utf8_lossy(&body)}),
                        Err(e) => json!({"type": "kms", "id": id, "status": e.status.as_u16(), "error": e.code, "reason": e.message}),
                    };
                    let _ = out.send(reply.to_string()).await;
                });
            }
            Ok(ClientFrame::Hello { .. }) | Err(_) => {
                let _ = self.out.send(json!({"type": "error", "message": "unexpected frame"}).to_string()).await;
            }
        }
    }
}
