//! Compliance reading: an org's compliance officer reads a space she is not
//! a member of, for an export, a legal matter or an investigation.
//!
//! Two parties have to agree, each in its own realm:
//!
//! - the **core** (the provider's) hands the ciphertext to the org's
//!   *compliance readers* (its configuration), read only, for spaces that
//!   have or had a member of the org (`GET /v1/compliance/…`);
//! - the org's **KMS** hands out the keys, to the org's *compliance officers*
//!   (its policy), `onBehalfOf` a user of the org whose authorizations
//!   apply, only for reading, and, when the org requires approval, only
//!   under an approved compliance case covering the space and the key's
//!   bind date. It audits every release with officer, subject and case.
//!
//! What is read is checked exactly as a member's client checks it
//! (see [`crate::Session`]): the space's sealed metadata binds it to its KMS
//! resource, every key must be bound to that resource, and every event's
//! sealed sender, space, time, kind, parent and target must match what the
//! core says; a replayed event is refused. Anything that fails shows as
//! [`Content::Unreadable`] with the reason, never as someone's words.

use std::path::Path;
use std::sync::{Arc, Mutex};

use kms_protocol::uri::KmsUri;

use crate::core_api::{CoreApi, CoreComplianceSpace, CoreEvent};
use crate::engine::envelope::{self, Body};
use crate::error::{Error, Result};
use crate::files::{download_verified, open_file_meta, Progress};
use crate::kms::{KmsClient, KmsOptions};
use crate::session::SessionConfig;
use crate::tokens::TokenSource;
use crate::types::{core_role, Content, FileId, FileInfo, Member, Message, SpaceId, UserId};

/// Events asked of the core per page.
const PAGE: u32 = 500;
/// Most events one read goes through (a bound on a hostile core's answers).
pub const MAX_EVENTS: usize = 5_000_000;

/// A space as a compliance officer reads it: checked against its sealed
/// metadata (so the core cannot point it at another KMS resource).
#[derive(Debug, Clone)]
pub struct ComplianceSpace {
    /// Id.
    pub id: SpaceId,
    /// Its KMS resource (checked against the sealed metadata).
    pub resource: KmsUri,
    /// Decrypted title.
    pub title: String,
    /// Current members, as the core lists them.
    pub members: Vec<Member>,
    /// Former members, as the core lists them.
    pub former_members: Vec<UserId>,
    /// Latest sequence number.
    pub last_seq: i64,
}

/// A compliance officer's reading session. See the [module](self) docs.
pub struct ComplianceReader {
    core: CoreApi,
    cfg: SessionConfig,
    tokens: Arc<dyn TokenSource>,
    officer: UserId,
    kms: KmsClient,
    /// `(space, sender, sealed event id)` → the seq it was first seen at.
    seen: crate::events::Seen,
}

impl std::fmt::Debug for ComplianceReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ComplianceReader")
            .field("officer", &self.officer)
            .field("on_behalf_of", &self.kms.on_behalf_of())
            .field("case", &self.kms.case_id())
            .finish_non_exhaustive()
    }
}

fn kms_client(
    cfg: &SessionConfig,
    tokens: Arc<dyn TokenSource>,
    subject: Option<&str>,
    case: Option<&str>,
) -> KmsClient {
    KmsClient::new(
        KmsOptions {
            pin: cfg.kms.clone(),
            route: cfg.kms_route.clone(),
            kms_audience: cfg.kms_audience.clone(),
            core_audience: cfg.core_audience.clone(),
            client_id: cfg.client_id.clone(),
            key_cache: cfg.key_cache,
        },
        tokens,
    )
    .with_compliance(subject.map(str::to_string), case.map(str::to_string))
}

fn domain_of(user: &str) -> Option<&str> {
    user.rsplit_once('@').map(|(_, d)| d)
}

impl ComplianceReader {
    /// Opens a reading session as the officer the tokens belong to (the
    /// core says who; the KMS must agree once [`ComplianceReader::act_for`]
    /// opens the channel). The KMS is asked nothing yet.
    pub async fn open(cfg: SessionConfig, tokens: Arc<dyn TokenSource>) -> Result<Self> {
        let core = CoreApi::new(&cfg.core_url, &cfg.core_audience, tokens.clone()).for_compliance();
        let me = core.me().await?;
        let officer = UserId::from(
            me["user_id"].as_str().ok_or_else(|| Error::Invalid("the core did not say who you are".into()))?,
        );
        let kms = kms_client(&cfg, tokens.clone(), None, None);
        Ok(Self { core, cfg, tokens, officer, kms, seen: Mutex::new(crate::engine::events::ReplayGuard::new()) })
    }

    /// The officer (as the core knows her).
    pub fn officer(&self) -> &UserId {
        &self.officer
    }

    /// The user whose authorizations key requests use (`None`: the officer's own).
    pub fn subject(&self) -> Option<&str> {
        self.kms.on_behalf_of()
    }

    /// The compliance case key requests name.
    pub fn case_id(&self) -> Option<&str> {
        self.kms.case_id()
    }

    /// The KMS client in force.
    pub fn kms(&self) -> &KmsClient {
        &self.kms
    }

    /// From now on, asks the KMS for keys `onBehalfOf` `subject` (a user of
    /// the officer's org), naming `case_id` when given. Opens the channel at
    /// once: a KMS that refuses (not a compliance officer, a subject of
    /// another org) answers [`Error::NotAuthorized`] with its reason here,
    /// and the KMS's word on who asks must be the officer's.
    pub async fn act_for(&mut self, subject: &str, case_id: Option<&str>) -> Result<()> {
        if subject.trim().is_empty() {
            return Err(Error::Invalid("name the user to act on behalf of".into()));
        }
        let kms = kms_client(&self.cfg, self.tokens.clone(), Some(subject), case_id);
        let kms_user = kms.user_id().await?;
        if self.officer != kms_user {
            return Err(Error::Tampered(format!(
                "the core says you are {}, your KMS says {kms_user}: refusing to continue",
                self.officer
            )));
        }
        self.kms = kms;
        self.seen.lock().expect("not poisoned").clear();
        Ok(())
    }

    /// A space as the core lists it for compliance readers (unverified:
    /// [`ComplianceReader::verify_space`] checks it).
    pub async fn space_record(&self, id: &SpaceId) -> Result<CoreComplianceSpace> {
        self.core.compliance_space(id).await
    }

    /// Someone whose authorizations can read the space, for
    /// [`ComplianceReader::act_for`]: a current member of the officer's org
    /// (in the order they joined), else a former one. `None` when the space
    /// never had one.
    pub fn default_subject(&self, s: &CoreComplianceSpace) -> Option<UserId> {
        let org = domain_of(&self.officer)?;
        let mine = |u: &&str| domain_of(u) == Some(org);
        s.members
            .iter()
            .map(|m| m.user_id.as_str())
            .find(mine)
            .or_else(|| s.former_members.iter().map(String::as_str).find(mine))
            .map(UserId::from)
    }

    /// Checks a space's sealed metadata against what the core says: the
    /// metadata's key must be bound to the resource the core names, and the
    /// metadata must name it too. Fails closed.
    pub async fn verify_space(&self, s: &CoreComplianceSpace) -> Result<ComplianceSpace> {
        let claimed = KmsUri::parse_absolute(&s.space.resource_uri)
            .map_err(|e| Error::Tampered(format!("space resource: {e}")))?;
        let sealed =
            s.space.title.as_deref().ok_or_else(|| Error::Tampered("the space has no sealed metadata".into()))?;
        let key_uri = envelope::key_uri_of(sealed)?;
        let key = self.kms.key(&key_uri).await?;
        if key.resource.as_ref() != Some(&claimed) {
            return Err(Error::Tampered(
                "the space's metadata key is bound to another resource than the core claims".into(),
            ));
        }
        let env = envelope::open(&key.key, sealed, &key_uri, &claimed.to_string(), None, None)?;
        let Body::Space { title } = &env.body else {
            return Err(Error::Tampered("the space's metadata is not space metadata".into()));
        };
        let members = s
            .members
            .iter()
            .map(|m| Ok(Member { user: UserId::from(&m.user_id), role: core_role(&m.role)? }))
            .collect::<Result<_>>()?;
        Ok(ComplianceSpace {
            id: SpaceId::from(&s.space.id),
            resource: claimed,
            title: title.clone(),
            members,
            former_members: s.former_members.iter().map(UserId::from).collect(),
            last_seq: s.space.last_seq,
        })
    }

    /// Opens a space: its record from the core, checked with keys from the KMS.
    pub async fn space(&self, id: &SpaceId) -> Result<ComplianceSpace> {
        let s = self.space_record(id).await?;
        self.verify_space(&s).await
    }

    /// The space's events the core stored at or after `from` and before
    /// `until` (ms since the epoch, the core's clock; `None`: unbounded),
    /// oldest first, decrypted and checked.
    pub async fn messages(
        &self,
        space: &ComplianceSpace,
        from: Option<i64>,
        until: Option<i64>,
    ) -> Result<Vec<Message>> {
        let mut out = Vec::new();
        let mut after = 0i64;
        let mut read = 0usize;
        loop {
            let page = self.core.events(&space.id, Some(after), None, Some(PAGE)).await?;
            let n = page.len();
            for e in &page {
                if space.id != e.space_id {
                    return Err(Error::Tampered("the core answered with events of another space".into()));
                }
                if e.seq <= after {
                    return Err(Error::Tampered("the core's events are out of order".into()));
                }
                after = e.seq;
                if from.is_some_and(|f| e.create_date < f) || until.is_some_and(|u| e.create_date >= u) {
                    continue;
                }
                out.push(self.decrypt(&space.resource, e).await);
            }
            read += n;
            if read > MAX_EVENTS {
                return Err(Error::Invalid(format!("the space has more than {MAX_EVENTS} events: narrow the range")));
            }
            if n < PAGE as usize {
                return Ok(out);
            }
        }
    }

    /// Decrypts one event of the space bound to `resource`; failures become
    /// [`Content::Unreadable`] with the reason.
    pub async fn decrypt(&self, resource: &KmsUri, e: &CoreEvent) -> Message {
        crate::events::message(e, self.decrypt_content(resource, e).await)
    }

    /// Decrypts one event, or says why not: the checks a member's client makes.
    pub async fn decrypt_content(&self, resource: &KmsUri, e: &CoreEvent) -> Result<Content> {
        match crate::events::plain_content(e) {
            Some(c) => Ok(c),
            None => crate::events::open_sealed(&self.kms, &self.seen, resource, e).await,
        }
    }

    /// A file's metadata, decrypted and checked as a member's client checks
    /// it; the file must belong to `space`.
    pub async fn file_info(&self, space: &ComplianceSpace, id: &FileId) -> Result<FileInfo> {
        let rec = self.core.file(id).await?;
        if space.id != rec.space_id {
            return Err(Error::Tampered("the core says this file belongs to another space".into()));
        }
        let key = self.kms.key(&rec.key_uri).await?;
        Ok(open_file_meta(&key, &space.resource, &rec)?.0)
    }

    /// Downloads and decrypts file `id` of `space` to `dest` (never
    /// replacing an existing file; a private temporary file until the last
    /// segment verified).
    pub async fn download(
        &self,
        space: &ComplianceSpace,
        id: &FileId,
        dest: &Path,
        progress: Progress<'_>,
    ) -> Result<FileInfo> {
        if tokio::fs::symlink_metadata(dest).await.is_ok() {
            return Err(Error::Invalid(format!("{} already exists", dest.display())));
        }
        let rec = self.core.file(id).await?;
        if space.id != rec.space_id {
            return Err(Error::Tampered("the core says this file belongs to another space".into()));
        }
        let key = self.kms.key(&rec.key_uri).await?;
        let (info, file_key, segment) = open_file_meta(&key, &space.resource, &rec)?;
        download_verified(&self.core, &rec, info, &file_key, segment, dest, false, progress).await
    }
}
