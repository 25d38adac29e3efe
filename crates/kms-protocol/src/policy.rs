//! Org policy and compliance cases: Custos extensions of the administrative API.
//!
//! The policy is one document per org, held by its KMS and changed only by org
//! admins: `retrieve kms://<d>/policy` answers it, `update kms://<d>/policy`
//! with `{policy, policyVersion}` replaces it if `policyVersion` is still the
//! current version (compare-and-swap: two admins never overwrite each other
//! silently). A document rather than one operation per setting because user
//! ids contain `@`, which object ids may not, and because one versioned
//! document makes every change a single audited step.
//!
//! Times the KMS decides (when a service was revoked, a user disabled, a
//! denial added) are set by the KMS; what a client sends for them is ignored.
//!
//! Compliance cases live at `kms://<d>/cases/<id>`: a compliance officer opens
//! one (`create /cases`), designated approvers approve it (`update
//! /cases/<id>` with `decision`), and once enough have, the officer's
//! `onBehalfOf` key requests naming the case (`caseId`) are answered.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::date::{self, Date};
use crate::error::ProtocolError;
use crate::uri::{Kind, KmsUri};

/// Most entries in any list or map of the policy (services, users, holds…).
pub const MAX_POLICY_ENTRIES: usize = 10_000;
/// Longest serialized policy accepted.
pub const MAX_POLICY_BYTES: usize = 1 << 20;

/// One org's policy.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgPolicy {
    /// Org admins besides the bootstrap admins of the KMS configuration.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub admins: Vec<String>,
    /// Who may use `onBehalfOf` (for users of this org only). Being an admin
    /// does not make anyone a compliance officer.
    #[serde(rename = "complianceOfficers", default, skip_serializing_if = "Vec::is_empty")]
    pub compliance_officers: Vec<String>,
    /// When set, compliance releases need an approved case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalPolicy>,
    /// Service identities and what each may do. Keyed by principal id: a
    /// user id (`bot@org`) for services with tokens, `service:<id>` for
    /// services with certificates. A certificate service absent here is refused.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub services: BTreeMap<String, ServicePolicy>,
    /// Users refused everything, whatever tokens they hold (value: since when; set by the KMS).
    #[serde(rename = "disabledUsers", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disabled_users: BTreeMap<String, Since>,
    /// Single clients (devices) refused, by user then client id.
    #[serde(rename = "disabledClients", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub disabled_clients: BTreeMap<String, BTreeMap<String, Since>>,
    /// How long content keys live.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// Legal holds by name: what they cover is never shredded while they stand.
    #[serde(rename = "legalHolds", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub legal_holds: BTreeMap<String, LegalHold>,
    /// Other orgs' KMSs this org federates with, by KMS domain (the allowlist:
    /// a KMS absent here, or ended, is neither asked nor answered).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub federation: BTreeMap<String, FederationPeer>,
}

/// A KMS of another org that this org federates with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationPeer {
    /// The org whose users that KMS speaks for (`globex.test`): the only
    /// user ids it may ask for, and the only ones it is told about.
    #[serde(rename = "orgDomain")]
    pub org_domain: String,
    /// Where it answers (`https://…`); when absent, `https://<kms domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// PEM certificates: the peer's static key certificate(s) (pinned), or
    /// the CA that issues them (then the certificate must name the KMS domain).
    pub trust: String,
    /// Allowed or ended.
    pub state: PeerState,
    /// When it was last ended (set by the KMS).
    #[serde(rename = "endedAt", with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Date>,
}

/// Whether a federation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerState {
    /// Keys flow both ways as authorizations allow.
    Allowed,
    /// Nothing is asked of it or answered to it.
    Ended,
}

/// Longest federation trust PEM accepted.
pub const MAX_TRUST_PEM: usize = 64 * 1024;

/// A KMS-set timestamp (what a client sends is replaced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Since {
    /// When.
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Date>,
}

/// m-of-n approval of compliance cases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalPolicy {
    /// How many distinct approvers (M).
    pub required: u32,
    /// Who may approve (N); never the officer who opened the case.
    pub approvers: Vec<String>,
}

/// What a service may do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServicePolicy {
    /// What it is: `bot`, `search`, `preview`, `dlp`, `compliance`, `other`.
    #[serde(default = "other")]
    pub kind: String,
    /// Allowed or revoked.
    pub state: ServiceState,
    /// `all` spaces of the org, or the resource URIs of named ones.
    #[serde(default)]
    pub spaces: SpaceScope,
    /// `participant` (keys only where members authorized it) and/or
    /// `orgAgent` (keys of every org resource in `spaces`, no member needed).
    #[serde(default = "participant")]
    pub roles: Vec<String>,
    /// Only keys bound at or after this time.
    #[serde(rename = "contentFrom", with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub content_from: Option<Date>,
    /// Only keys bound before this time.
    #[serde(rename = "contentUntil", with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub content_until: Option<Date>,
    /// Content withdrawn from it: a space, a time range, or both.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denials: Vec<ContentDenial>,
    /// When it was last revoked (set by the KMS).
    #[serde(rename = "revokedAt", with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<Date>,
}

fn other() -> String {
    "other".into()
}

fn participant() -> Vec<String> {
    vec![ROLE_PARTICIPANT.into()]
}

/// The participant role.
pub const ROLE_PARTICIPANT: &str = "participant";
/// The draft's org-wide agent role.
pub const ROLE_ORG_AGENT: &str = "orgAgent";

/// Allowed or revoked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceState {
    /// May get keys within its scope.
    Allowed,
    /// Refused everything.
    Revoked,
}

/// Which spaces.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpaceScope {
    /// Every space of the org.
    #[default]
    All,
    /// These resource URIs (canonical).
    Only(Vec<String>),
}

impl Serialize for SpaceScope {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            SpaceScope::All => s.serialize_str("all"),
            SpaceScope::Only(v) => v.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for SpaceScope {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            S(String),
            L(Vec<String>),
        }
        match Raw::deserialize(d)? {
            Raw::S(s) if s == "all" => Ok(SpaceScope::All),
            Raw::S(_) => Err(serde::de::Error::custom("spaces must be \"all\" or a list of resource URIs")),
            Raw::L(l) => Ok(SpaceScope::Only(l)),
        }
    }
}

impl SpaceScope {
    /// Whether the resource (canonical URI) is in scope.
    pub fn covers(&self, resource: &str) -> bool {
        match self {
            SpaceScope::All => true,
            SpaceScope::Only(l) => l.iter().any(|r| r == resource),
        }
    }
}

/// Content withdrawn: keys of `space` (all spaces when absent) bound in `[from, until)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContentDenial {
    /// The space (resource URI); every space when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub space: Option<String>,
    /// From (inclusive); the beginning of time when absent.
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Date>,
    /// Until (exclusive); forever when absent.
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Date>,
    /// When the denial was added (set by the KMS).
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Date>,
}

impl ContentDenial {
    /// Whether it withdraws a key of `resource` bound at `bound`.
    pub fn covers(&self, resource: &str, bound: Date) -> bool {
        self.space.as_deref().is_none_or(|s| s == resource)
            && self.from.is_none_or(|f| bound >= f)
            && self.until.is_none_or(|u| bound < u)
    }
}

impl ServicePolicy {
    /// Whether it may have a key of `resource` bound at `bound` (`None`: not bound yet).
    pub fn may_read(&self, resource: &str, bound: Option<Date>) -> bool {
        if self.state != ServiceState::Allowed || !self.spaces.covers(resource) {
            return false;
        }
        let Some(b) = bound else { return true };
        self.content_from.is_none_or(|f| b >= f)
            && self.content_until.is_none_or(|u| b < u)
            && !self.denials.iter().any(|d| d.covers(resource, b))
    }

    /// Whether it holds the org-wide agent role.
    pub fn org_agent(&self) -> bool {
        self.roles.iter().any(|r| r == ROLE_ORG_AGENT)
    }
}

/// Retention of content keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Keys whose retention period ended more than this many days ago are destroyed.
    pub days: u32,
}

/// A legal hold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LegalHold {
    /// Users whose spaces (those they are authorized on) it covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    /// Spaces (resource URIs) it covers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub spaces: Vec<String>,
    /// Why (a matter number; no personal data).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// When it was placed (set by the KMS).
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub since: Option<Date>,
}

/// The policy as it travels: the document and its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyObject {
    /// Version (0: never set).
    pub version: u64,
    /// When it last changed.
    #[serde(rename = "updateDate", with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub update_date: Option<Date>,
    /// The document.
    pub policy: OrgPolicy,
}

/// A compliance case.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaseObject {
    /// `kms://<d>/cases/<id>`.
    pub uri: KmsUri,
    /// The officer who opened it.
    pub officer: String,
    /// Spaces (resource URIs) it covers.
    pub spaces: Vec<String>,
    /// Only keys bound at or after.
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Date>,
    /// Only keys bound before.
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Date>,
    /// Why (a matter number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// State.
    pub state: CaseState,
    /// Who approved, in order.
    #[serde(default)]
    pub approvals: Vec<String>,
    /// How many approvals it needs.
    pub required: u32,
    /// Opened.
    #[serde(rename = "createDate", with = "date::rfc3339")]
    pub create_date: Date,
}

impl CaseObject {
    /// Whether the case lets keys of `resource` bound at `bound` go.
    pub fn covers(&self, resource: &str, bound: Option<Date>) -> bool {
        self.spaces.iter().any(|s| s == resource)
            && bound.is_none_or(|b| self.from.is_none_or(|f| b >= f) && self.until.is_none_or(|u| b < u))
    }
}

/// A case's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseState {
    /// Waiting for approvals.
    Pending,
    /// Enough approvals: keys may be released.
    Approved,
    /// An approver refused it.
    Denied,
    /// Closed: nothing more is released.
    Closed,
}

/// What a new case asks for (`create /cases`, member `case`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaseRequest {
    /// Spaces (resource URIs).
    pub spaces: Vec<String>,
    /// Only keys bound at or after.
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub from: Option<Date>,
    /// Only keys bound before.
    #[serde(with = "date::rfc3339::option", default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Date>,
    /// Why (a matter number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An approver's decision (`update /cases/<id>`, member `decision`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CaseDecision {
    /// Approve.
    Approve,
    /// Refuse (the case is denied for good).
    Deny,
    /// Close (officer or admin): nothing more is released.
    Close,
}

fn bad(field: &'static str, reason: &'static str) -> ProtocolError {
    ProtocolError::InvalidField { field, reason }
}

/// Canonical user id of this org: `name` or `name@org` → `name@org`; other orgs refused.
pub fn own_user(id: &str, org_domain: &str, field: &'static str) -> Result<String, ProtocolError> {
    let id = id.trim();
    let (name, domain) = match id.rsplit_once('@') {
        Some((n, d)) => (n, d.to_ascii_lowercase()),
        None => (id, org_domain.to_ascii_lowercase()),
    };
    if name.is_empty() || name.len() > 256 || name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(bad(field, "not a user id"));
    }
    if domain != org_domain.to_ascii_lowercase() {
        return Err(bad(field, "names a user of another org"));
    }
    Ok(format!("{name}@{domain}"))
}

fn resource_uri(s: &str, kms_domain: &str, field: &'static str) -> Result<String, ProtocolError> {
    let u = KmsUri::parse(s, kms_domain).map_err(|_| bad(field, "not a KMS resource URI"))?;
    if !u.is_object(Kind::Resources) || u.domain() != kms_domain {
        return Err(bad(field, "must name a resource of this KMS"));
    }
    Ok(u.to_string())
}

fn any_resource_uri(s: &str, kms_domain: &str, field: &'static str) -> Result<String, ProtocolError> {
    let u = KmsUri::parse(s, kms_domain).map_err(|_| bad(field, "not a KMS resource URI"))?;
    if !u.is_object(Kind::Resources) {
        return Err(bad(field, "must name a resource"));
    }
    Ok(u.to_string())
}

fn users(list: &[String], org: &str, field: &'static str) -> Result<Vec<String>, ProtocolError> {
    let mut out = list.iter().map(|u| own_user(u, org, field)).collect::<Result<Vec<_>, _>>()?;
    out.sort();
    out.dedup();
    Ok(out)
}

impl OrgPolicy {
    /// Checks and canonicalizes a policy an admin sent: user ids of this org
    /// only, resource URIs of this KMS, known roles, sane ranges. Does not
    /// touch KMS-set times (see [`OrgPolicy::stamp`]).
    pub fn canonicalize(mut self, kms_domain: &str, org_domain: &str) -> Result<Self, ProtocolError> {
        let too_many = |n: usize| n > MAX_POLICY_ENTRIES;
        if too_many(self.admins.len())
            || too_many(self.compliance_officers.len())
            || too_many(self.services.len())
            || too_many(self.disabled_users.len())
            || too_many(self.disabled_clients.len())
            || too_many(self.legal_holds.len())
        {
            return Err(bad("policy", "too many entries"));
        }
        self.admins = users(&self.admins, org_domain, "admins")?;
        self.compliance_officers = users(&self.compliance_officers, org_domain, "complianceOfficers")?;
        if let Some(a) = &mut self.approval {
            a.approvers = users(&a.approvers, org_domain, "approval.approvers")?;
            if a.required == 0 || a.required as usize > a.approvers.len() {
                return Err(bad("approval.required", "must be between 1 and the number of approvers"));
            }
        }
        let mut services = BTreeMap::new();
        for (id, mut s) in std::mem::take(&mut self.services) {
            let id = match id.strip_prefix("service:") {
                Some(rest) if !rest.is_empty() && rest.len() <= 256 && !rest.chars().any(char::is_control) => {
                    format!("service:{}", rest.to_ascii_lowercase())
                }
                Some(_) => return Err(bad("services", "invalid service id")),
                None => own_user(&id, org_domain, "services")?,
            };
            if !matches!(s.kind.as_str(), "bot" | "search" | "preview" | "dlp" | "compliance" | "other") {
                return Err(bad("services.kind", "must be bot, search, preview, dlp, compliance or other"));
            }
            if s.roles.is_empty() || s.roles.iter().any(|r| r != ROLE_PARTICIPANT && r != ROLE_ORG_AGENT) {
                return Err(bad("services.roles", "roles are participant and/or orgAgent"));
            }
            s.roles.sort();
            s.roles.dedup();
            if let SpaceScope::Only(l) = &mut s.spaces {
                if too_many(l.len()) {
                    return Err(bad("services.spaces", "too many entries"));
                }
                *l = l.iter().map(|r| resource_uri(r, kms_domain, "services.spaces")).collect::<Result<_, _>>()?;
                l.sort();
                l.dedup();
            }
            if let (Some(f), Some(u)) = (s.content_from, s.content_until) {
                if f >= u {
                    return Err(bad("services.contentUntil", "must be after contentFrom"));
                }
            }
            if too_many(s.denials.len()) {
                return Err(bad("services.denials", "too many entries"));
            }
            for d in &mut s.denials {
                if let Some(sp) = &d.space {
                    d.space = Some(resource_uri(sp, kms_domain, "services.denials.space")?);
                }
                if let (Some(f), Some(u)) = (d.from, d.until) {
                    if f >= u {
                        return Err(bad("services.denials.until", "must be after from"));
                    }
                }
            }
            if services.insert(id, s).is_some() {
                return Err(bad("services", "a service is listed twice"));
            }
        }
        self.services = services;
        let mut disabled = BTreeMap::new();
        for (u, s) in std::mem::take(&mut self.disabled_users) {
            disabled.insert(own_user(&u, org_domain, "disabledUsers")?, s);
        }
        self.disabled_users = disabled;
        let mut clients = BTreeMap::new();
        for (u, m) in std::mem::take(&mut self.disabled_clients) {
            if too_many(m.len()) || m.keys().any(|c| c.is_empty() || c.len() > 256) {
                return Err(bad("disabledClients", "client ids are 1 to 256 characters"));
            }
            clients.insert(own_user(&u, org_domain, "disabledClients")?, m);
        }
        self.disabled_clients = clients;
        if let Some(r) = &self.retention {
            if r.days == 0 || r.days > 36_500 {
                return Err(bad("retention.days", "must be 1 to 36500"));
            }
        }
        for h in self.legal_holds.values_mut() {
            h.users = users(&h.users, org_domain, "legalHolds.users")?;
            // A hold may name another KMS's space: it keeps this KMS's cached copies of its keys.
            h.spaces = h
                .spaces
                .iter()
                .map(|r| any_resource_uri(r, kms_domain, "legalHolds.spaces"))
                .collect::<Result<_, _>>()?;
            if h.users.is_empty() && h.spaces.is_empty() {
                return Err(bad("legalHolds", "a hold covers at least one user or space"));
            }
            if h.reason.as_ref().is_some_and(|r| r.len() > 256) {
                return Err(bad("legalHolds.reason", "at most 256 characters"));
            }
        }
        if self.legal_holds.keys().any(|k| k.is_empty() || k.len() > 128) {
            return Err(bad("legalHolds", "hold names are 1 to 128 characters"));
        }
        if too_many(self.federation.len()) {
            return Err(bad("federation", "too many entries"));
        }
        let mut peers = BTreeMap::new();
        for (d, mut p) in std::mem::take(&mut self.federation) {
            let d = d.trim().to_ascii_lowercase();
            if !crate::uri::valid_domain(&d) {
                return Err(bad("federation", "keys are KMS domains"));
            }
            if d == kms_domain.to_ascii_lowercase() {
                return Err(bad("federation", "a KMS does not federate with itself"));
            }
            p.org_domain = p.org_domain.trim().to_ascii_lowercase();
            if !crate::uri::valid_domain(&p.org_domain) {
                return Err(bad("federation.orgDomain", "not a domain"));
            }
            if p.org_domain == org_domain.to_ascii_lowercase() {
                return Err(bad("federation.orgDomain", "names this KMS's own org"));
            }
            if peers.values().any(|q: &FederationPeer| q.org_domain == p.org_domain) {
                return Err(bad("federation.orgDomain", "two KMSs cannot speak for the same org"));
            }
            if let Some(u) = &p.url {
                let ok = (u.starts_with("https://") || u.starts_with("http://"))
                    && u.len() <= 512
                    && !u.chars().any(|c| c.is_control() || c.is_whitespace());
                if !ok {
                    return Err(bad("federation.url", "must be an http(s) URL of at most 512 characters"));
                }
                p.url = Some(u.trim_end_matches('/').to_string());
            }
            if p.trust.len() > MAX_TRUST_PEM || !p.trust.contains("-----BEGIN CERTIFICATE-----") {
                return Err(bad("federation.trust", "must be PEM certificates (at most 64 KiB)"));
            }
            peers.insert(d, p);
        }
        self.federation = peers;
        Ok(self)
    }

    /// Sets the KMS-decided times of `self` (the new policy) from `old` and `now`:
    /// a service revoked now gets `revokedAt = now` (one already revoked keeps
    /// its time), a user or client disabled now gets `since = now`, a new
    /// denial or hold gets `since = now`.
    pub fn stamp(&mut self, old: &OrgPolicy, now: Date) {
        for (id, s) in &mut self.services {
            let before = old.services.get(id);
            s.revoked_at = match (s.state, before) {
                (ServiceState::Revoked, Some(b)) if b.state == ServiceState::Revoked => b.revoked_at.or(Some(now)),
                (ServiceState::Revoked, _) => Some(now),
                // Re-allowed: remember the last revocation (clients re-key after it).
                (ServiceState::Allowed, Some(b)) => b.revoked_at,
                (ServiceState::Allowed, None) => None,
            };
            for d in &mut s.denials {
                let known = before.and_then(|b| {
                    b.denials.iter().find(|o| o.space == d.space && o.from == d.from && o.until == d.until)
                });
                d.since = Some(known.and_then(|o| o.since).unwrap_or(now));
            }
        }
        for (u, s) in &mut self.disabled_users {
            s.since = Some(old.disabled_users.get(u).and_then(|o| o.since).unwrap_or(now));
        }
        for (u, m) in &mut self.disabled_clients {
            for (c, s) in m.iter_mut() {
                s.since = Some(old.disabled_clients.get(u).and_then(|o| o.get(c)).and_then(|o| o.since).unwrap_or(now));
            }
        }
        for (name, h) in &mut self.legal_holds {
            h.since = Some(old.legal_holds.get(name).and_then(|o| o.since).unwrap_or(now));
        }
        for (d, p) in &mut self.federation {
            let before = old.federation.get(d);
            p.ended_at = match (p.state, before) {
                (PeerState::Ended, Some(b)) if b.state == PeerState::Ended => b.ended_at.or(Some(now)),
                (PeerState::Ended, _) => Some(now),
                (PeerState::Allowed, Some(b)) => b.ended_at,
                (PeerState::Allowed, None) => None,
            };
        }
    }

    /// The standing federation with the KMS at `kms_domain`, if any.
    pub fn peer(&self, kms_domain: &str) -> Option<&FederationPeer> {
        self.federation.get(kms_domain).filter(|p| p.state == PeerState::Allowed)
    }

    /// Whether `client_id` of `user` is disabled (or the whole user).
    pub fn disabled(&self, user: &str, client_id: &str) -> bool {
        self.disabled_users.contains_key(user)
            || self.disabled_clients.get(user).is_some_and(|m| m.contains_key(client_id))
    }

    /// Whether a legal hold covers `resource` or one of `users`.
    pub fn held(&self, resource: &str, users: &[&str]) -> bool {
        self.legal_holds
            .values()
            .any(|h| h.spaces.iter().any(|s| s == resource) || h.users.iter().any(|u| users.contains(&u.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> Result<OrgPolicy, ProtocolError> {
        serde_json::from_str::<OrgPolicy>(json).unwrap().canonicalize("kms.acme.test", "acme.test")
    }

    #[test]
    fn canonicalizes_users_services_and_uris() {
        let p = policy(
            r#"{"admins":["Alice","alice@ACME.test"],"services":{"pollbot":{"kind":"bot","state":"allowed",
            "spaces":["/resources/r1"],"roles":["participant"]},"service:Search@Acme.test":{"kind":"search",
            "state":"allowed","roles":["orgAgent"]}}}"#,
        )
        .unwrap();
        assert_eq!(p.admins, vec!["Alice@acme.test", "alice@acme.test"]);
        assert!(p.services.contains_key("pollbot@acme.test"));
        assert!(p.services.contains_key("service:search@acme.test"));
        assert_eq!(
            p.services["pollbot@acme.test"].spaces,
            SpaceScope::Only(vec!["kms://kms.acme.test/resources/r1".into()])
        );
        assert!(p.services["service:search@acme.test"].org_agent());
    }

    #[test]
    fn refuses_bad_policies() {
        for bad in [
            r#"{"admins":["eve@evil.test"]}"#,
            r#"{"complianceOfficers":["x@other.test"]}"#,
            r#"{"services":{"b":{"state":"allowed","roles":["god"]}}}"#,
            r#"{"services":{"b":{"state":"allowed","kind":"weird"}}}"#,
            r#"{"services":{"b":{"state":"allowed","spaces":["kms://other.test/resources/r"]}}}"#,
            r#"{"services":{"b":{"state":"allowed","spaces":["/keys/k"]}}}"#,
            r#"{"services":{"b":{"state":"allowed","contentFrom":"2026-02-01T00:00:00Z","contentUntil":"2026-01-01T00:00:00Z"}}}"#,
            r#"{"services":{"b":{"state":"allowed"},"b@acme.test":{"state":"allowed"}}}"#,
            r#"{"approval":{"required":3,"approvers":["a","b"]}}"#,
            r#"{"approval":{"required":0,"approvers":["a"]}}"#,
            r#"{"retention":{"days":0}}"#,
            r#"{"legalHolds":{"h":{}}}"#,
            r#"{"disabledUsers":{"eve@evil.test":{}}}"#,
        ] {
            assert!(policy(bad).is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<OrgPolicy>(r#"{"unknown":1}"#).is_err());
        assert!(serde_json::from_str::<OrgPolicy>(r#"{"services":{"b":{"state":"allowed","spaces":"some"}}}"#).is_err());
    }

    #[test]
    fn scope_time_range_and_denials() {
        let t = |s: &str| date::parse(s).unwrap();
        let mut s: ServicePolicy =
            serde_json::from_str(r#"{"state":"allowed","contentFrom":"2026-01-01T00:00:00Z"}"#).unwrap();
        assert!(s.may_read("r", Some(t("2026-03-01T00:00:00Z"))));
        assert!(!s.may_read("r", Some(t("2025-12-31T23:59:59Z"))));
        assert!(s.may_read("r", None));
        s.denials.push(ContentDenial {
            space: Some("r".into()),
            from: Some(t("2026-03-01T09:00:00Z")),
            until: Some(t("2026-03-01T10:00:00Z")),
            since: None,
        });
        assert!(!s.may_read("r", Some(t("2026-03-01T09:30:00Z"))));
        assert!(s.may_read("r", Some(t("2026-03-01T10:00:00Z"))));
        assert!(s.may_read("other", Some(t("2026-03-01T09:30:00Z"))));
        s.state = ServiceState::Revoked;
        assert!(!s.may_read("other", None));
    }

    #[test]
    fn stamp_sets_kms_times_and_keeps_old_ones() {
        let t0 = date::parse("2026-01-01T00:00:00Z").unwrap();
        let t1 = date::parse("2026-02-01T00:00:00Z").unwrap();
        let mut a = policy(
            r#"{"services":{"b":{"state":"revoked","revokedAt":"1999-01-01T00:00:00Z"}},"disabledUsers":{"eve":{}}}"#,
        )
        .unwrap();
        a.stamp(&OrgPolicy::default(), t0);
        assert_eq!(a.services["b@acme.test"].revoked_at, Some(t0));
        assert_eq!(a.disabled_users["eve@acme.test"].since, Some(t0));
        let mut b = a.clone();
        b.stamp(&a, t1);
        assert_eq!(b.services["b@acme.test"].revoked_at, Some(t0));
        assert_eq!(b.disabled_users["eve@acme.test"].since, Some(t0));
        assert!(b.disabled("eve@acme.test", "any"));
    }

    #[test]
    fn federation_peers_are_checked_canonicalized_and_stamped() {
        const PEM: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        let peer = |d: &str, org: &str, url: &str, trust: &str| {
            let url = if url.is_empty() { String::new() } else { format!(r#","url":"{url}""#) };
            policy(&format!(
                r#"{{"federation":{{"{d}":{{"orgDomain":"{org}","trust":{},"state":"allowed"{url}}}}}}}"#,
                serde_json::to_string(trust).unwrap()
            ))
        };
        let p = peer("KMS.Globex.Test", "Globex.Test", "https://kms.globex.test/", PEM).unwrap();
        let g = &p.federation["kms.globex.test"];
        assert_eq!((g.org_domain.as_str(), g.url.as_deref()), ("globex.test", Some("https://kms.globex.test")));
        assert!(p.peer("kms.globex.test").is_some());
        assert!(peer("kms.globex.test", "globex.test", "", PEM).unwrap().federation["kms.globex.test"].url.is_none());
        for (d, org, url, trust, field) in [
            ("kms.acme.test", "globex.test", "", PEM, "federation"),
            ("not a domain", "globex.test", "", PEM, "federation"),
            ("kms.globex.test", "acme.test", "", PEM, "federation.orgDomain"),
            ("kms.globex.test", "-bad-", "", PEM, "federation.orgDomain"),
            ("kms.globex.test", "globex.test", "ftp://x", PEM, "federation.url"),
            ("kms.globex.test", "globex.test", "https://a b", PEM, "federation.url"),
            ("kms.globex.test", "globex.test", "", "not a certificate", "federation.trust"),
        ] {
            match peer(d, org, url, trust) {
                Err(ProtocolError::InvalidField { field: f, .. }) => assert_eq!(f, field, "{d} {org} {url}"),
                other => panic!("{d} {org} {url}: {other:?}"),
            }
        }
        // Two KMSs cannot speak for one org.
        let two = format!(
            r#"{{"federation":{{"kms1.globex.test":{{"orgDomain":"globex.test","trust":{t},"state":"allowed"}},
            "kms2.globex.test":{{"orgDomain":"globex.test","trust":{t},"state":"allowed"}}}}}}"#,
            t = serde_json::to_string(PEM).unwrap()
        );
        assert!(matches!(policy(&two), Err(ProtocolError::InvalidField { field: "federation.orgDomain", .. })));
        // Ending is stamped by the KMS, once; an ended peer is no peer.
        let t0 = date::parse("2026-01-01T00:00:00Z").unwrap();
        let t1 = date::parse("2026-02-01T00:00:00Z").unwrap();
        let mut ended = p.clone();
        ended.federation.get_mut("kms.globex.test").unwrap().state = PeerState::Ended;
        ended.stamp(&p, t0);
        assert_eq!(ended.federation["kms.globex.test"].ended_at, Some(t0));
        assert!(ended.peer("kms.globex.test").is_none());
        let mut again = ended.clone();
        again.stamp(&ended, t1);
        assert_eq!(again.federation["kms.globex.test"].ended_at, Some(t0));
    }
}
