//! KMS federation, the asking side: this KMS (B) fetches, for one of its own
//! users, a key, resource or authorizations that another org's KMS (A) owns.
//!
//! The channel to A is mutually authenticated. B checks A's static key (from
//! A's `/kms/info`, its certificate against the trust B's policy gives A) and
//! then every answer's signature or encryption under it; A checks B's `jwk`
//! credential (B's static key, its certificate, and a `kms-pop` proof bound
//! to the handshake or session and the requestId) against the trust A's
//! policy gives B. Each side asks and answers only while its own policy lists
//! the other as an allowed peer.
//!
//! A's answers are kept at most [`ANSWER_CACHE`], so that A de-authorizing
//! B's users, or ending the federation, stops releases within that time. The
//! engine decides who may receive what; this module only talks to peers.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jose::Jwk;
use kms_protocol::channel::{KmsInfo, ServerKey, Session};
use kms_protocol::message::{Method, Request, RequestBody};
use kms_protocol::policy::FederationPeer;
use kms_protocol::{ProtocolError, Response, Status};

use crate::service_auth::{verify_peer, PeerRole};

/// How long an answer of a peer is reused (revocation there reaches us within this).
pub const ANSWER_CACHE: Duration = Duration::from_secs(1);
/// How long to wait for a peer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// Renew a peer session this long before it expires.
const SESSION_MARGIN: time::Duration = time::Duration::seconds(60);
/// Largest answer read from a peer.
const MAX_ANSWER: usize = 4 * kms_protocol::channel::MAX_MESSAGE_LEN;
const CACHE_CAP: usize = 100_000;

/// Why a peer gave no usable answer. Reasons never hold keys or tokens.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FedError {
    /// This org does not federate with that KMS (or the federation ended).
    #[error("this org does not federate with {0}")]
    NotFederated(String),
    /// The peer cannot be reached, or answered with something unreadable.
    #[error("the KMS {domain} cannot be reached: {detail}")]
    Unreachable {
        /// The peer's KMS domain.
        domain: String,
        /// What went wrong.
        detail: String,
    },
    /// Whoever answered did not prove to be that KMS.
    #[error("the server at the address of {domain} did not prove to be that KMS: {detail}")]
    NotProven {
        /// The peer's KMS domain.
        domain: String,
        /// What failed.
        detail: String,
    },
    /// The peer's own refusal.
    #[error("{domain} refused: {reason}")]
    Refused {
        /// The peer's KMS domain.
        domain: String,
        /// Its status.
        status: Status,
        /// Its reason.
        reason: String,
    },
}

impl FedError {
    /// The status our client gets.
    pub fn status(&self) -> Status {
        match self {
            FedError::NotFederated(_) => Status::FORBIDDEN,
            FedError::Unreachable { .. } => Status::UNAVAILABLE,
            FedError::NotProven { .. } => Status(502),
            FedError::Refused { status, .. } if *status == Status::NOT_FOUND => Status::NOT_FOUND,
            FedError::Refused { status, .. } if status.is_success() => Status(502),
            FedError::Refused { .. } => Status::FORBIDDEN,
        }
    }
}

/// One established channel to a peer.
struct Channel {
    info: KmsInfo,
    url: String,
    trust: String,
    session: Session,
}

/// Channels to peers and their recent answers.
pub struct Federation {
    http: reqwest::Client,
    /// This KMS's static key certificate (standard base64 DER), sent as `x5c`.
    cert_chain: Vec<String>,
    cert_der: Vec<u8>,
    channels: tokio::sync::Mutex<HashMap<String, Arc<Channel>>>,
    answers: std::sync::Mutex<HashMap<String, (Instant, Arc<Response>)>>,
    /// Discovered addresses of peers configured without one, by KMS domain.
    discovered: std::sync::Mutex<HashMap<String, (Instant, String)>>,
    /// Where discovery looks for a domain instead of `https://<domain>` (tests).
    discovery_base: std::sync::Mutex<HashMap<String, String>>,
}

/// The discovery document's path: `https://<kms domain>/.well-known/custos-kms`
/// answers `{"uri": "kms://<kms domain>", "url": "<where its KMS answers>"}`.
pub const WELL_KNOWN: &str = "/.well-known/custos-kms";
/// How long a discovered address is reused.
const DISCOVERY_CACHE: Duration = Duration::from_secs(600);

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation").finish_non_exhaustive()
    }
}

impl Federation {
    /// Federation as the KMS whose static key certificate is `cert_der`.
    pub fn new(cert_der: &[u8]) -> Self {
        let http = reqwest::Client::builder()
            .timeout(PEER_TIMEOUT)
            .connect_timeout(Duration::from_secs(2))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("an HTTP client with these settings builds");
        Self {
            http,
            cert_chain: vec![base64::engine::general_purpose::STANDARD.encode(cert_der)],
            cert_der: cert_der.to_vec(),
            channels: tokio::sync::Mutex::new(HashMap::new()),
            answers: std::sync::Mutex::new(HashMap::new()),
            discovered: std::sync::Mutex::new(HashMap::new()),
            discovery_base: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// Makes discovery for `domain` look at `base` instead of `https://<domain>` (for tests).
    pub fn set_discovery_base(&self, domain: &str, base: &str) {
        self.discovery_base.lock().expect("not poisoned").insert(domain.to_string(), base.to_string());
        self.discovered.lock().expect("not poisoned").remove(domain);
    }

    /// This KMS's certificate as PEM: what a peer's admin pins (`custos kms admin federation allow --trust`).
    pub fn certificate_pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(&self.cert_der);
        let lines: Vec<&str> = b64.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap_or_default()).collect();
        format!("-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n", lines.join("\n"))
    }

    /// Where the peer answers: its configured URL, else what its domain's
    /// discovery document says, else its domain itself (`https://<kms domain>`).
    /// The address is never trusted: the peer's certificate and signatures are.
    async fn url(&self, domain: &str, peer: &FederationPeer) -> Result<String, FedError> {
        if let Some(u) = &peer.url {
            return Ok(u.clone());
        }
        if let Some((at, u)) = self.discovered.lock().expect("not poisoned").get(domain) {
            if at.elapsed() < DISCOVERY_CACHE {
                return Ok(u.clone());
            }
        }
        let base = self
            .discovery_base
            .lock()
            .expect("not poisoned")
            .get(domain)
            .cloned()
            .unwrap_or_else(|| format!("https://{domain}"));
        let unreachable = |detail: String| FedError::Unreachable { domain: domain.to_string(), detail };
        let r = self
            .http
            .get(format!("{base}{WELL_KNOWN}"))
            .send()
            .await
            .map_err(|e| unreachable(format!("discovery at {base}{WELL_KNOWN} failed: {}", why(&e))))?;
        let url = match r.status().as_u16() {
            // No document: the KMS answers at its domain itself.
            404 => base.clone(),
            200 => {
                #[derive(serde::Deserialize)]
                struct Doc {
                    uri: String,
                    url: Option<String>,
                }
                let body = read_capped(r).await.map_err(unreachable)?;
                let doc: Doc = serde_json::from_slice(&body)
                    .map_err(|_| unreachable(format!("{base}{WELL_KNOWN} is not a discovery document")))?;
                if doc.uri != format!("kms://{domain}") {
                    return Err(unreachable(format!("{base}{WELL_KNOWN} describes another KMS")));
                }
                match doc.url {
                    Some(u) if (u.starts_with("https://") || u.starts_with("http://")) && u.len() <= 512 => {
                        u.trim_end_matches('/').to_string()
                    }
                    Some(_) => return Err(unreachable(format!("{base}{WELL_KNOWN} gives an unusable url"))),
                    None => base.clone(),
                }
            }
            s => return Err(unreachable(format!("discovery at {base}{WELL_KNOWN} answered HTTP {s}"))),
        };
        self.discovered.lock().expect("not poisoned").insert(domain.to_string(), (Instant::now(), url.clone()));
        Ok(url)
    }

    /// Asks the peer KMS `domain` for `uri` (a retrieval), for our user
    /// `on_behalf_of`. A recent identical answer is reused (at most
    /// [`ANSWER_CACHE`] old) unless `fresh`. Only successful answers come back as `Ok`.
    #[allow(clippy::too_many_arguments)]
    pub async fn retrieve(
        &self,
        me: &ServerKey,
        domain: &str,
        peer: &FederationPeer,
        uri: &str,
        body: RequestBody,
        on_behalf_of: &str,
        fresh: bool,
    ) -> Result<Arc<Response>, FedError> {
        let cache_key = format!(
            "{domain}\n{}\n{uri}\n{}",
            peer.url.as_deref().unwrap_or("discovered"),
            serde_json::to_string(&body).unwrap_or_default()
        );
        {
            let mut c = self.answers.lock().expect("not poisoned");
            match c.get(&cache_key) {
                Some((at, r)) if !fresh && at.elapsed() < ANSWER_CACHE => return Ok(r.clone()),
                Some(_) => {
                    c.remove(&cache_key);
                }
                None => {}
            }
        }
        let started = Instant::now();
        let answer = self.call(me, domain, peer, Method::Retrieve, uri, body, on_behalf_of).await;
        let outcome = match &answer {
            Ok(_) => "answered",
            Err(FedError::Refused { .. }) => "refused",
            Err(FedError::NotProven { .. }) => "not_proven",
            Err(_) => "unreachable",
        };
        metrics::counter!("kms_federation_requests_total", "peer" => domain.to_string(), "outcome" => outcome)
            .increment(1);
        metrics::histogram!("kms_federation_seconds").record(started.elapsed().as_secs_f64());
        let resp = Arc::new(answer?);
        let mut c = self.answers.lock().expect("not poisoned");
        // Answers hold key material: never keep one longer than it may be used.
        if c.len() >= 64 {
            c.retain(|_, (at, _)| at.elapsed() < ANSWER_CACHE);
        }
        if c.len() >= CACHE_CAP {
            c.clear();
        }
        c.insert(cache_key, (started, resp.clone()));
        Ok(resp)
    }

    /// Forgets every cached answer (after our own policy changed).
    pub fn forget(&self) {
        self.answers.lock().expect("not poisoned").clear();
    }

    #[allow(clippy::too_many_arguments)]
    async fn call(
        &self,
        me: &ServerKey,
        domain: &str,
        peer: &FederationPeer,
        method: Method,
        uri: &str,
        body: RequestBody,
        on_behalf_of: &str,
    ) -> Result<Response, FedError> {
        let mut renewed = false;
        loop {
            let ch = self.channel(me, domain, peer).await?;
            let mut req = Request::new(method, uri, None);
            req.body = body.clone();
            me.attach_peer_proof(&mut req, &ch.session, self.cert_chain.clone(), Some(on_behalf_of))
                .map_err(|e| internal(domain, e))?;
            let wrapped = ch.session.wrap(&req).map_err(|e| internal(domain, e))?;
            let answer = self.post(domain, &ch.url, &wrapped).await?;
            match ch.session.unwrap(&ch.info, &answer, &req.request_id) {
                Ok(resp) if resp.status.is_success() => return Ok(resp),
                // Our session there was reset or lost its standing: once more on a new one.
                Ok(resp) if resp.status == Status::UNAUTHORIZED && !renewed => {}
                Ok(resp) => {
                    return Err(FedError::Refused {
                        domain: domain.to_string(),
                        status: resp.status,
                        reason: resp.reason.unwrap_or_default(),
                    })
                }
                Err(ProtocolError::Reset(_) | ProtocolError::Expired) if !renewed => {}
                Err(e) => return Err(proof_error(domain, e)),
            }
            renewed = true;
            self.channels.lock().await.remove(domain);
        }
    }

    /// The channel to `domain`, handshaking when there is none (or the peer's
    /// address or trust changed, or it is about to expire).
    async fn channel(&self, me: &ServerKey, domain: &str, peer: &FederationPeer) -> Result<Arc<Channel>, FedError> {
        let url = self.url(domain, peer).await?;
        let mut channels = self.channels.lock().await;
        if let Some(ch) = channels.get(domain) {
            let fresh = ch.session.expires() - time::OffsetDateTime::now_utc() > SESSION_MARGIN;
            if fresh && ch.url == url && ch.trust == peer.trust {
                return Ok(ch.clone());
            }
        }
        let info = self.peer_key(domain, &url, peer).await?;
        let pending = me.begin_peer_handshake(&info, self.cert_chain.clone()).map_err(|e| internal(domain, e))?;
        let answer = self.post(domain, &url, &pending.wrapped).await?;
        let session = pending.finish(&info, &answer).map_err(|e| proof_error(domain, e))?;
        tracing::info!(peer = domain, "federation channel established");
        let ch = Arc::new(Channel { info, url, trust: peer.trust.clone(), session });
        channels.insert(domain.to_string(), ch.clone());
        Ok(ch)
    }

    /// The peer's static key from its `/kms/info`, checked against the trust our policy gives it.
    async fn peer_key(&self, domain: &str, url: &str, peer: &FederationPeer) -> Result<KmsInfo, FedError> {
        #[derive(serde::Deserialize)]
        struct Info {
            uri: String,
            key: Jwk,
        }
        let unreachable = |detail: String| FedError::Unreachable { domain: domain.to_string(), detail };
        let r = self.http.get(format!("{url}/kms/info")).send().await.map_err(|e| unreachable(why(&e)))?;
        if !r.status().is_success() {
            return Err(unreachable(format!("{url}/kms/info answered HTTP {}", r.status().as_u16())));
        }
        let body = read_capped(r).await.map_err(unreachable)?;
        let info: Info =
            serde_json::from_slice(&body).map_err(|_| unreachable(format!("{url}/kms/info is not KMS information")))?;
        let not_proven = |detail: &str| FedError::NotProven { domain: domain.to_string(), detail: detail.to_string() };
        if info.uri != format!("kms://{domain}") {
            return Err(not_proven("it names another KMS domain"));
        }
        verify_peer(&peer.trust, &info.key, domain, PeerRole::Server, crate::now_ms() / 1000)
            .map_err(|e| not_proven(&format!("its certificate is not one this org trusts for it ({e})")))?;
        let mut key = info.key.to_rsa_public().map_err(|_| not_proven("its static key is not an RSA key"))?;
        if key.kid().is_none() {
            key = key.with_kid(info.key.kid.clone().unwrap_or_default());
        }
        Ok(KmsInfo { domain: domain.to_string(), key })
    }

    async fn post(&self, domain: &str, url: &str, compact: &str) -> Result<String, FedError> {
        let unreachable = |detail: String| FedError::Unreachable { domain: domain.to_string(), detail };
        let r = self
            .http
            .post(format!("{url}/kms/messages"))
            .header("content-type", "application/jose")
            .body(compact.to_string())
            .send()
            .await
            .map_err(|e| unreachable(why(&e)))?;
        if !r.status().is_success() {
            return Err(unreachable(format!("it answered HTTP {}", r.status().as_u16())));
        }
        let body = read_capped(r).await.map_err(unreachable)?;
        String::from_utf8(body).map_err(|_| unreachable("its answer is not text".into()))
    }
}

fn internal(domain: &str, e: ProtocolError) -> FedError {
    tracing::error!(peer = domain, error = %e, "building a federation request failed");
    FedError::Unreachable { domain: domain.to_string(), detail: "this KMS could not build the request".into() }
}

/// A protocol failure on a peer's answer: a signature or encryption that is
/// not the peer's is a failed proof; anything else, an unusable answer.
fn proof_error(domain: &str, e: ProtocolError) -> FedError {
    match e {
        ProtocolError::Jose(jose::Error::BadSignature)
        | ProtocolError::Jose(jose::Error::DecryptionFailed)
        | ProtocolError::WrongContext { .. }
        | ProtocolError::KidMismatch => FedError::NotProven {
            domain: domain.to_string(),
            detail: "its answer is not signed or sealed by the key it presented".into(),
        },
        ProtocolError::Status { status, reason } => FedError::Refused { domain: domain.to_string(), status, reason },
        other => {
            FedError::Unreachable { domain: domain.to_string(), detail: format!("its answer is unusable ({other})") }
        }
    }
}

fn why(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "it did not answer in time".into()
    } else if e.is_connect() {
        "the connection was refused or failed".into()
    } else {
        "the request failed".into()
    }
}

async fn read_capped(mut r: reqwest::Response) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|_| "the answer broke off".to_string())? {
        if out.len() + chunk.len() > MAX_ANSWER {
            return Err("the answer is too large".into());
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// The id under which this KMS keeps its copy of object `id` of the KMS
/// `domain`. Object ids never contain `:`, so no URI of this KMS names it.
pub fn cached_id(domain: &str, id: &str) -> String {
    format!("fed:{domain}/{id}")
}

/// The KMS domain and object id of a copy kept under [`cached_id`].
pub fn origin_of(cached: &str) -> Option<(&str, &str)> {
    cached.strip_prefix("fed:")?.split_once('/')
}
