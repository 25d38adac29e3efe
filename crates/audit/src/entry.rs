//! Log entries: what the KMS hands in ([`NewEntry`]) and what the log holds ([`Entry`]).
//!
//! An entry names things (ids, `kms://` URIs, short reasons); it never holds
//! keys, tokens or plaintext. [`NewEntry::validate`] (run by every append)
//! enforces that as far as a type can: bounded lengths, URIs for resources
//! and keys, a small flat `detail` object, and no string that looks like
//! key material or a token (see [`NewEntry::validate`]).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::canon::{self, Value, MAX_SAFE_INTEGER};

/// The entry format version written in every line (`"v":1`).
pub const ENTRY_VERSION: u64 = 1;

/// `prev` of the first entry: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Why an entry (or a name in it) was refused. Never quotes the value: it
/// might be exactly the secret the check is there to keep out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct EntryError {
    /// Which field.
    pub field: &'static str,
    /// What is wrong with it.
    pub reason: &'static str,
}

fn invalid(field: &'static str, reason: &'static str) -> EntryError {
    EntryError { field, reason }
}

/// A name outside the built-in set of an [`Action`] or [`ActorKind`]:
/// `[a-z][a-z0-9_]*`, at most 48 bytes, and not one of the built-in names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OtherName(String);

impl OtherName {
    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn check_name(s: &str, field: &'static str) -> Result<(), EntryError> {
    let mut bytes = s.bytes();
    let ok = matches!(bytes.next(), Some(b'a'..=b'z'))
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && s.len() <= 48;
    if ok {
        Ok(())
    } else {
        Err(invalid(field, "must match [a-z][a-z0-9_]* (at most 48 bytes)"))
    }
}

macro_rules! named_enum {
    (
        $(#[$meta:meta])*
        $name:ident, $field:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )*
            /// A name this build does not know (written by a newer KMS, or
            /// made with `other`): kept, stored and verified like any other.
            Other(OtherName),
        }

        impl $name {
            /// The stable snake_case name written in the log.
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $text, )*
                    $name::Other(n) => n.as_str(),
                }
            }

            /// Reads a name: a built-in one, or any other valid name as `Other`.
            pub fn from_name(s: &str) -> Result<Self, EntryError> {
                match s {
                    $( $text => Ok($name::$variant), )*
                    other => {
                        check_name(other, $field)?;
                        Ok($name::Other(OtherName(other.to_owned())))
                    }
                }
            }

            /// A name outside the built-in set (a built-in name gives the built-in variant).
            pub fn other(s: &str) -> Result<Self, EntryError> {
                Self::from_name(s)
            }

            /// Every built-in value.
            pub fn builtin() -> &'static [$name] {
                &[$( $name::$variant, )*]
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                $name::from_name(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

named_enum! {
    /// What happened. Names are stable; new ones may appear (as [`Action::Other`] here).
    Action, "action" {
        /// A key was handed out (outcome `allowed`). Carries the key URIs and, for a bound key, its resource.
        KeyRelease = "key_release",
        /// A key request was refused (outcome `denied`).
        KeyDenied = "key_denied",
        /// Unbound keys were created.
        KeyCreate = "key_create",
        /// A key was bound to a resource.
        KeyBind = "key_bind",
        /// A resource (KRO) was created.
        ResourceCreate = "resource_create",
        /// Authorizations were added to a resource.
        AuthorizationCreate = "authorization_create",
        /// Authorizations were removed from a resource.
        AuthorizationDelete = "authorization_delete",
        /// Org policy changed.
        PolicyChange = "policy_change",
        /// An administrative operation (CMK/KEK, configuration).
        AdminAction = "admin_action",
        /// A session was reset or revoked.
        SessionReset = "session_reset",
        /// Keys or resources were destroyed under a retention policy.
        RetentionShred = "retention_shred",
    }
}

named_enum! {
    /// In which capacity the actor acted: lets key-access transparency tell a
    /// member's own retrievals from those of services and compliance officers.
    ActorKind, "actor_kind" {
        /// An ordinary user, for themself.
        User = "user",
        /// A service identity (bot, search, previews, DLP, org agent).
        Service = "service",
        /// A compliance officer acting `onBehalfOf` someone (see the entry's `case`).
        Compliance = "compliance",
        /// An org admin or kmsAdmin.
        Admin = "admin",
        /// The holder of an anonymous authorization.
        Anonymous = "anonymous",
        /// Another enterprise's KMS (federation).
        PeerKms = "peer_kms",
        /// The KMS itself (retention jobs, start-up).
        Kms = "kms",
    }
}

/// Whether the request was granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Granted.
    Allowed,
    /// Refused.
    Denied,
}

impl Outcome {
    /// `allowed` or `denied`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Denied => "denied",
        }
    }

    /// Reads `allowed` or `denied`.
    pub fn from_name(s: &str) -> Result<Self, EntryError> {
        match s {
            "allowed" => Ok(Outcome::Allowed),
            "denied" => Ok(Outcome::Denied),
            _ => Err(invalid("outcome", "must be allowed or denied")),
        }
    }
}

/// One value of a [`Detail`]: a short string, a safe integer, a boolean or a short list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum DetailValue {
    /// `true` / `false`.
    Bool(bool),
    /// An integer within ±(2^53 − 1).
    Int(i64),
    /// A string (at most 256 bytes).
    Str(String),
    /// Strings (at most 32, each at most 256 bytes).
    List(Vec<String>),
}

impl From<&str> for DetailValue {
    fn from(s: &str) -> Self {
        DetailValue::Str(s.to_owned())
    }
}
impl From<String> for DetailValue {
    fn from(s: String) -> Self {
        DetailValue::Str(s)
    }
}
impl From<i64> for DetailValue {
    fn from(n: i64) -> Self {
        DetailValue::Int(n)
    }
}
impl From<u32> for DetailValue {
    fn from(n: u32) -> Self {
        DetailValue::Int(n.into())
    }
}
impl From<bool> for DetailValue {
    fn from(b: bool) -> Self {
        DetailValue::Bool(b)
    }
}
impl From<Vec<String>> for DetailValue {
    fn from(v: Vec<String>) -> Self {
        DetailValue::List(v)
    }
}

/// A small, flat JSON object qualifying an entry: a reason, a count, a role.
/// Names match `[a-z][a-z0-9_]*` (at most 32 bytes); at most 16 members.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Detail(BTreeMap<String, DetailValue>);

impl Detail {
    /// An empty detail.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) a member.
    pub fn with(mut self, name: &str, value: impl Into<DetailValue>) -> Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    /// A member.
    pub fn get(&self, name: &str) -> Option<&DetailValue> {
        self.0.get(name)
    }

    /// Whether there are no members.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The members, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &DetailValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub(crate) fn canonical(&self) -> Value<'_> {
        Value::Obj(
            self.0
                .iter()
                .map(|(k, v)| {
                    let v = match v {
                        DetailValue::Bool(b) => Value::Bool(*b),
                        DetailValue::Int(n) => Value::Int(*n),
                        DetailValue::Str(s) => Value::Str(s),
                        DetailValue::List(items) => Value::Arr(items.iter().map(|s| Value::Str(s)).collect()),
                    };
                    (k.as_str(), v)
                })
                .collect(),
        )
    }

    /// The canonical JSON text (as stored and hashed).
    pub fn to_canonical_json(&self) -> String {
        self.canonical().render()
    }

    /// Checks names, sizes and integer range (the rules a verifier also applies).
    pub(crate) fn check_shape(&self) -> Result<(), EntryError> {
        if self.0.len() > 16 {
            return Err(invalid("detail", "at most 16 members"));
        }
        for (name, value) in &self.0 {
            let mut bytes = name.bytes();
            let ok = matches!(bytes.next(), Some(b'a'..=b'z'))
                && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                && name.len() <= 32;
            if !ok {
                return Err(invalid("detail", "member names must match [a-z][a-z0-9_]* (at most 32 bytes)"));
            }
            match value {
                DetailValue::Int(n) if n.unsigned_abs() > MAX_SAFE_INTEGER => {
                    return Err(invalid("detail", "integers must lie within ±(2^53 − 1)"))
                }
                DetailValue::List(items) if items.len() > 32 => {
                    return Err(invalid("detail", "lists hold at most 32 strings"))
                }
                _ => {}
            }
        }
        Ok(())
    }
}

/// An entry as the KMS hands it to [`crate::AuditLog::append`]; the log adds
/// `seq`, `time`, `node`, `prev` and `hash`.
///
/// Only ids and URIs: never a key, token, credential or plaintext.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEntry {
    /// Who asked: a user id (`name@org`), a service id, a peer KMS domain.
    pub actor: String,
    /// In which capacity.
    pub actor_kind: ActorKind,
    /// For `onBehalfOf` requests: the user whose authorizations applied.
    pub on_behalf_of: Option<String>,
    /// The compliance case the request belongs to, if any.
    pub case: Option<String>,
    /// What happened.
    pub action: Action,
    /// The resource concerned (`kms://…` URI), if any.
    pub resource: Option<String>,
    /// The keys concerned (`kms://…` URIs).
    pub keys: Vec<String>,
    /// Granted or refused.
    pub outcome: Outcome,
    /// A small qualifying object (reason, counts, role URI…).
    pub detail: Detail,
}

/// Longest id (actor, on_behalf_of, node): 256 bytes.
pub const MAX_ID_LEN: usize = 256;
/// Longest URI: 512 bytes.
pub const MAX_URI_LEN: usize = 512;
/// Most key URIs in one entry.
pub const MAX_KEYS: usize = 64;
/// Longest string in a detail: 256 bytes.
pub const MAX_DETAIL_STR: usize = 256;
/// Longest detail, canonically encoded: 4 KiB.
pub const MAX_DETAIL_LEN: usize = 4096;

impl NewEntry {
    /// An entry with no resource, keys, on-behalf-of, case or detail.
    pub fn new(actor: impl Into<String>, actor_kind: ActorKind, action: Action, outcome: Outcome) -> Self {
        Self {
            actor: actor.into(),
            actor_kind,
            on_behalf_of: None,
            case: None,
            action,
            resource: None,
            keys: Vec::new(),
            outcome,
            detail: Detail::new(),
        }
    }

    /// Sets the resource URI.
    pub fn resource(mut self, uri: impl Into<String>) -> Self {
        self.resource = Some(uri.into());
        self
    }

    /// Sets the key URIs.
    pub fn keys<I: IntoIterator<Item = S>, S: Into<String>>(mut self, uris: I) -> Self {
        self.keys = uris.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the user acted for.
    pub fn on_behalf_of(mut self, user: impl Into<String>) -> Self {
        self.on_behalf_of = Some(user.into());
        self
    }

    /// Sets the compliance case.
    pub fn case(mut self, case: impl Into<String>) -> Self {
        self.case = Some(case.into());
        self
    }

    /// Adds a detail member.
    pub fn detail(mut self, name: &str, value: impl Into<DetailValue>) -> Self {
        self.detail.0.insert(name.to_owned(), value.into());
        self
    }

    /// Checks the entry is fit for the log (every append runs this):
    ///
    /// - `actor`, `on_behalf_of`, `case`: 1 to 256 bytes, no control characters;
    /// - `resource` and each of `keys` (at most 64): a `kms://` URI of at most
    ///   512 bytes, made of RFC 3986 characters only;
    /// - `detail`: at most 16 members named `[a-z][a-z0-9_]*`, strings of at
    ///   most 256 bytes without control characters, lists of at most 32 such
    ///   strings, integers within ±(2^53 − 1), 4 KiB in all;
    /// - no string anywhere holds a run of 32 or more base64/base64url
    ///   characters mixing upper case, lower case and digits: that is what
    ///   keys, JWTs, JWEs and sealed session tickets look like (UUIDs, hex
    ///   digests and ordinary names do not);
    /// - `key_release` is `allowed`, `key_denied` is `denied`.
    pub fn validate(&self) -> Result<(), EntryError> {
        check_id(&self.actor, "actor", MAX_ID_LEN)?;
        if let Some(u) = &self.on_behalf_of {
            check_id(u, "on_behalf_of", MAX_ID_LEN)?;
        }
        if let Some(c) = &self.case {
            check_id(c, "case", MAX_ID_LEN)?;
        }
        if let Some(r) = &self.resource {
            check_uri(r, "resource")?;
        }
        if self.keys.len() > MAX_KEYS {
            return Err(invalid("keys", "at most 64 key URIs per entry"));
        }
        for k in &self.keys {
            check_uri(k, "keys")?;
        }
        self.detail.check_shape()?;
        for (_, value) in self.detail.iter() {
            match value {
                DetailValue::Str(s) => check_text(s, "detail", MAX_DETAIL_STR, true)?,
                DetailValue::List(items) => {
                    for s in items {
                        check_text(s, "detail", MAX_DETAIL_STR, true)?;
                    }
                }
                DetailValue::Int(_) | DetailValue::Bool(_) => {}
            }
        }
        if self.detail.to_canonical_json().len() > MAX_DETAIL_LEN {
            return Err(invalid("detail", "at most 4 KiB"));
        }
        match (&self.action, self.outcome) {
            (Action::KeyRelease, Outcome::Denied) => Err(invalid("outcome", "key_release is allowed; use key_denied")),
            (Action::KeyDenied, Outcome::Allowed) => Err(invalid("outcome", "key_denied is denied")),
            _ => Ok(()),
        }
    }
}

fn check_id(s: &str, field: &'static str, max: usize) -> Result<(), EntryError> {
    if s.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    check_text(s, field, max, true)
}

/// Length, no control characters, and (optionally) nothing key-like.
pub(crate) fn check_text(s: &str, field: &'static str, max: usize, secrets: bool) -> Result<(), EntryError> {
    if s.len() > max {
        return Err(invalid(field, "too long"));
    }
    if s.chars().any(char::is_control) {
        return Err(invalid(field, "must not contain control characters"));
    }
    if secrets && looks_secret(s) {
        return Err(invalid(field, "looks like key material or a token; log ids and URIs only"));
    }
    Ok(())
}

fn check_uri(s: &str, field: &'static str) -> Result<(), EntryError> {
    let Some(rest) = s.strip_prefix("kms://") else {
        return Err(invalid(field, "must be a kms:// URI"));
    };
    if rest.is_empty() || s.len() > MAX_URI_LEN {
        return Err(invalid(field, "must be a kms:// URI of at most 512 bytes"));
    }
    const OTHER: &[u8] = b"-._~:/?#[]@!$&'()*+,;=%";
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric() || OTHER.contains(&b)) {
        return Err(invalid(field, "must use URI characters only (RFC 3986)"));
    }
    if looks_secret(s) {
        return Err(invalid(field, "looks like key material or a token; log ids and URIs only"));
    }
    Ok(())
}

/// A run of ≥ 32 base64/base64url characters mixing upper case, lower case and digits.
pub(crate) fn looks_secret(s: &str) -> bool {
    let (mut len, mut upper, mut lower, mut digit) = (0usize, false, false, false);
    for b in s.bytes().chain(std::iter::once(b' ')) {
        if b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_') {
            len += 1;
            upper |= b.is_ascii_uppercase();
            lower |= b.is_ascii_lowercase();
            digit |= b.is_ascii_digit();
        } else {
            if len >= 32 && upper && lower && digit {
                return true;
            }
            (len, upper, lower, digit) = (0, false, false, false);
        }
    }
    false
}

/// An entry of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Position in the log: 1, 2, 3… without gaps.
    pub seq: u64,
    /// When it was logged, in ms since the Unix epoch; never less than the previous entry's.
    pub time: u64,
    /// The KMS node that wrote it.
    pub node: String,
    /// Who asked.
    pub actor: String,
    /// In which capacity.
    pub actor_kind: ActorKind,
    /// The user acted for (`onBehalfOf`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_behalf_of: Option<String>,
    /// The compliance case.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case: Option<String>,
    /// What happened.
    pub action: Action,
    /// The resource concerned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The keys concerned.
    pub keys: Vec<String>,
    /// Granted or refused.
    pub outcome: Outcome,
    /// Qualifying detail.
    pub detail: Detail,
    /// Hash of the previous entry ([`GENESIS_HASH`] for seq 1).
    pub prev: String,
    /// Hash of this entry (see [`Entry::compute_hash`]).
    pub hash: String,
}

impl Entry {
    /// Builds the entry at `seq` from `new`, linked to `prev`, and hashes it.
    pub(crate) fn seal(new: NewEntry, seq: u64, time: u64, node: &str, prev: String) -> Entry {
        let mut e = Entry {
            seq,
            time,
            node: node.to_owned(),
            actor: new.actor,
            actor_kind: new.actor_kind,
            on_behalf_of: new.on_behalf_of,
            case: new.case,
            action: new.action,
            resource: new.resource,
            keys: new.keys,
            outcome: new.outcome,
            detail: new.detail,
            prev,
            hash: String::new(),
        };
        e.hash = e.compute_hash();
        e
    }

    fn canonical(&self, with_hash: bool) -> Value<'_> {
        let mut m = vec![
            ("type", Value::Str("entry")),
            ("v", Value::UInt(ENTRY_VERSION)),
            ("seq", Value::UInt(self.seq)),
            ("time", Value::UInt(self.time)),
            ("node", Value::Str(&self.node)),
            ("actor", Value::Str(&self.actor)),
            ("actor_kind", Value::Str(self.actor_kind.as_str())),
            ("action", Value::Str(self.action.as_str())),
            ("keys", Value::Arr(self.keys.iter().map(|k| Value::Str(k)).collect())),
            ("outcome", Value::Str(self.outcome.as_str())),
            ("detail", self.detail.canonical()),
            ("prev", Value::Str(&self.prev)),
        ];
        if let Some(v) = &self.on_behalf_of {
            m.push(("on_behalf_of", Value::Str(v)));
        }
        if let Some(v) = &self.case {
            m.push(("case", Value::Str(v)));
        }
        if let Some(v) = &self.resource {
            m.push(("resource", Value::Str(v)));
        }
        if with_hash {
            m.push(("hash", Value::Str(&self.hash)));
        }
        Value::Obj(m)
    }

    /// The hash this entry should carry: lowercase hex SHA-256 of its
    /// canonical line without the `hash` member (see the crate docs).
    pub fn compute_hash(&self) -> String {
        canon::sha256_hex(self.canonical(false).render().as_bytes())
    }

    /// Whether `hash` matches the content.
    pub fn hash_is_valid(&self) -> bool {
        self.hash == self.compute_hash()
    }

    /// The entry's JSON line (canonical, without the trailing newline).
    pub fn to_jsonl(&self) -> String {
        self.canonical(true).render()
    }

    /// The fields as the KMS handed them in.
    pub fn to_new_entry(&self) -> NewEntry {
        NewEntry {
            actor: self.actor.clone(),
            actor_kind: self.actor_kind.clone(),
            on_behalf_of: self.on_behalf_of.clone(),
            case: self.case.clone(),
            action: self.action.clone(),
            resource: self.resource.clone(),
            keys: self.keys.clone(),
            outcome: self.outcome,
            detail: self.detail.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release() -> NewEntry {
        NewEntry::new("search-bot@example.com", ActorKind::Service, Action::KeyRelease, Outcome::Allowed)
            .resource("kms://kms.example.com/resources/5f0c1d7e-3a53-4f0e-9a55-0b8f8fd1c2a1")
            .keys(["kms://kms.example.com/keys/0b6d2f1c-8a7e-4c55-b3f9-5e2a1f3d9c70"])
    }

    #[test]
    fn names_round_trip_and_unknown_names_are_kept() {
        for a in Action::builtin() {
            assert_eq!(&Action::from_name(a.as_str()).unwrap(), a);
        }
        for k in ActorKind::builtin() {
            assert_eq!(&ActorKind::from_name(k.as_str()).unwrap(), k);
        }
        let future = Action::from_name("key_escrow_v2").unwrap();
        assert!(matches!(future, Action::Other(_)));
        assert_eq!(future.as_str(), "key_escrow_v2");
        assert_eq!(Action::other("key_release").unwrap(), Action::KeyRelease);
        for bad in ["", "Key", "1x", "a-b", "a b", &"a".repeat(49)] {
            assert!(Action::from_name(bad).is_err(), "{bad:?}");
        }
        assert_eq!(serde_json::to_string(&Action::KeyBind).unwrap(), "\"key_bind\"");
    }

    #[test]
    fn ordinary_entries_pass() {
        release().validate().unwrap();
        release()
            .on_behalf_of("bob@example.com")
            .case("CASE-2026-0042")
            .detail("reason", "legal_hold")
            .detail("count", 3i64)
            .detail("roles", vec!["orgAgent".to_owned()])
            .detail("anonymous", false)
            .validate()
            .unwrap();
        // Hex digests and UUIDs are not mistaken for secrets.
        release()
            .detail("token_sha256", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
            .validate()
            .unwrap();
    }

    #[test]
    fn secrets_and_free_text_are_refused() {
        let jwk_k = "Xq3J9vK2mP8sL5nR7tW1yZ4bC6dF0gH2jA8eU3iO5kM";
        let jwt = "eyJhbGciOiJQUzI1NiIsInR5cCI6ImF0K2p3dCJ9.eyJzdWIiOiJhbGljZSJ9.c2lnbmF0dXJlMTIzNDU2Nzg5MEFCQ0RFRg";
        let cases: Vec<NewEntry> = vec![
            release().detail("note", jwk_k),
            release().detail("bearer", jwt),
            NewEntry { actor: jwt.into(), ..release() },
            release().keys([format!("kms://kms.example.com/keys/{jwk_k}")]),
            release().keys(["{\"kty\":\"oct\",\"k\":\"abc\"}"]),
            release().resource("https://example.com/x"),
            release().resource("kms://kms.example.com/resources/a b"),
            release().detail("text", "x".repeat(257)),
            release().detail("text", "line\nbreak"),
            release().detail("Bad-Name", "x"),
            release().detail("big", (1i64 << 53) + 1),
            NewEntry { actor: String::new(), ..release() },
            NewEntry { outcome: Outcome::Denied, ..release() },
        ];
        for (i, e) in cases.iter().enumerate() {
            let err = e.validate().expect_err(&format!("case {i} accepted"));
            // The error never quotes the value.
            assert!(!err.to_string().contains(jwk_k) && !err.to_string().contains("eyJ"), "{err}");
        }
        let mut many = Detail::new();
        for i in 0..17 {
            many = many.with(&format!("m{i}"), 1i64);
        }
        assert!(NewEntry { detail: many, ..release() }.validate().is_err());
    }

    #[test]
    fn line_is_canonical_and_hash_omits_only_the_hash_member() {
        let e = Entry::seal(
            release().case("C-1").detail("reason", "ok"),
            7,
            1_700_000_000_123,
            "node-a",
            GENESIS_HASH.into(),
        );
        let line = e.to_jsonl();
        assert!(line.starts_with(r#"{"action":"key_release","actor":"search-bot@example.com","actor_kind":"service","case":"C-1","detail":{"reason":"ok"},"hash":""#), "{line}");
        assert!(line.ends_with(r#","seq":7,"time":1700000000123,"type":"entry","v":1}"#), "{line}");
        let without = line.replace(&format!(",\"hash\":\"{}\"", e.hash), "");
        assert_eq!(e.hash, canon::sha256_hex(without.as_bytes()));
        // serde's own form parses back to the same entry.
        let back: Entry = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
