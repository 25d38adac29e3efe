//! The live, decrypted event stream: the core's WebSocket, resumed from the
//! last sequence number seen in each space after any disconnect.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::core_api::CoreEvent;
use crate::error::{Error, Result};
use crate::session::Session;
use crate::types::{Message, SpaceId};

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A live subscription to all of the user's spaces.
pub struct Live<'a> {
    session: &'a Session,
    since: HashMap<SpaceId, i64>,
    socket: Option<Socket>,
    /// Reconnect delays so far (reset on every frame received).
    failures: u32,
    /// Events fetched to fill a gap, delivered before anything newer.
    queue: VecDeque<Message>,
}

/// Silence after which the socket is pinged, and after twice which it is dropped.
const IDLE: Duration = Duration::from_secs(30);

impl Session {
    /// Subscribes to the events of every space you are in. Spaces in `since`
    /// resume after that sequence number; others start with their next event.
    pub async fn live(&self, mut since: HashMap<SpaceId, i64>) -> Result<Live<'_>> {
        // Every space starts from where it is now, so that a reconnect resumes
        // all of them (not only those that had an event).
        for (space, _, _) in self.core.spaces().await? {
            since.entry(SpaceId::from(space.id)).or_insert(space.last_seq);
        }
        let mut l = Live { session: self, since, socket: None, failures: 0, queue: VecDeque::new() };
        l.connect().await?;
        Ok(l)
    }
}

impl Live<'_> {
    async fn connect(&mut self) -> Result<()> {
        let base = self.session.core().base();
        let url = format!("{}/v1/ws", base.replacen("http", "ws", 1));
        let token = self.session.core().token().await?;
        let mut req =
            url.as_str().into_client_request().map_err(|e| Error::CoreUnreachable(format!("bad core URL ({e})")))?;
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", token.as_str())
                .parse()
                .map_err(|_| Error::Auth("the token is not a valid header value".into()))?,
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(req)
            .await
            .map_err(|e| Error::CoreUnreachable(format!("WebSocket: {e}")))?;
        let hello = json!({"type": "hello", "since": self.since});
        ws.send(WsMessage::Text(hello.to_string().into()))
            .await
            .map_err(|e| Error::CoreUnreachable(format!("WebSocket: {e}")))?;
        // Wait for ready (or the core's refusal).
        loop {
            match ws.next().await {
                Some(Ok(WsMessage::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("ready") => break,
                        Some("error") => {
                            return Err(Error::Auth(format!(
                                "the core refused the live connection: {}",
                                v["message"].as_str().unwrap_or("")
                            )))
                        }
                        _ => continue,
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Err(Error::CoreUnreachable(format!("WebSocket: {e}"))),
                None => return Err(Error::CoreUnreachable("the core closed the WebSocket".into())),
            }
        }
        self.socket = Some(ws);
        Ok(())
    }

    /// The next event, decrypted. Reconnects (resuming) when the connection
    /// drops; gives up with `CoreUnreachable` after about a minute of failures.
    pub async fn next(&mut self) -> Result<Message> {
        let mut pinged = false;
        loop {
            if let Some(m) = self.queue.pop_front() {
                return Ok(m);
            }
            let Some(ws) = self.socket.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            let frame = match tokio::time::timeout(IDLE, ws.next()).await {
                Ok(f) => f,
                Err(_) if !pinged => {
                    // Quiet for a while: is the connection still there?
                    pinged = true;
                    if ws.send(WsMessage::Text(json!({"type": "ping"}).to_string().into())).await.is_err() {
                        self.socket = None;
                    }
                    continue;
                }
                Err(_) => {
                    self.socket = None; // half-open: start over (resuming)
                    continue;
                }
            };
            match frame {
                Some(Ok(WsMessage::Text(t))) => {
                    self.failures = 0;
                    pinged = false;
                    let v: Value = match serde_json::from_str(&t) {
                        Ok(v) => v,
                        Err(_) => continue,
                    };
                    if v["type"] != "event" {
                        continue;
                    }
                    let Ok(e) = serde_json::from_value::<CoreEvent>(v["event"].clone()) else { continue };
                    let seen = *self.since.get(e.space_id.as_str()).unwrap_or(&0);
                    if e.seq <= seen {
                        continue; // a resume may repeat what we had
                    }
                    if seen > 0 && e.seq > seen + 1 {
                        // A gap: fetch what is missing, in order, before this one.
                        let missing = self
                            .session
                            .core()
                            .events(&e.space_id, Some(seen), None, Some((e.seq - seen - 1) as u32))
                            .await?;
                        for m in missing.iter().filter(|m| m.seq > seen && m.seq < e.seq) {
                            let d = self.session.decrypt(m).await;
                            self.queue.push_back(d);
                        }
                    }
                    self.since.insert(SpaceId::from(&e.space_id), e.seq);
                    let d = self.session.decrypt(&e).await;
                    self.queue.push_back(d);
                }
                Some(Ok(WsMessage::Close(_))) | None | Some(Err(_)) => {
                    self.socket = None;
                }
                Some(Ok(_)) => {
                    pinged = false;
                }
            }
        }
    }

    async fn reconnect(&mut self) -> Result<()> {
        loop {
            let pause = Duration::from_millis(200u64 << self.failures.min(5));
            tokio::time::sleep(pause).await;
            match self.connect().await {
                Ok(()) => {
                    tracing::debug!("live connection resumed");
                    return Ok(());
                }
                Err(e @ Error::Auth(_)) => return Err(e),
                Err(e) => {
                    self.failures += 1;
                    if self.failures > 12 {
                        return Err(e);
                    }
                }
            }
        }
    }

    /// The last sequence number seen per space (to resume later).
    pub fn positions(&self) -> &HashMap<SpaceId, i64> {
        &self.since
    }
}
