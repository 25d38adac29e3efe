//! KMS URIs: `kms://<kms-domain>/<kind>/<id>` and the relative forms.
//!
//! Our KMS issues absolute URIs and accepts either form; a relative URI means
//! the receiving KMS's own domain. [`KmsUri`] always holds the canonical form:
//! a lowercase domain, known path shapes only, and a percent-encoded `authId`
//! query value. Two URIs name the same object exactly when they are equal.

use std::fmt;
use std::str::FromStr;

use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

/// Longest URI accepted.
pub const MAX_URI_LEN: usize = 2048;
/// Longest object id accepted.
pub const MAX_ID_LEN: usize = 1024;

/// The scheme prefix of an absolute KMS URI.
pub const SCHEME: &str = "kms://";

/// Characters percent-encoded in a query value: all but RFC 3986 unreserved.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

/// The kinds of objects (and collections) a KMS serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// Ephemeral ECDH keys (sessions).
    Ecdhe,
    /// Content keys.
    Keys,
    /// Resources (KROs).
    Resources,
    /// Authorizations.
    Authorizations,
    /// Customer master keys (administrative API).
    Cmk,
    /// Key encryption keys (administrative API).
    Kek,
    /// Compliance cases (a Custos extension).
    Cases,
}

impl Kind {
    /// The path segment.
    pub fn segment(self) -> &'static str {
        match self {
            Kind::Ecdhe => "ecdhe",
            Kind::Keys => "keys",
            Kind::Resources => "resources",
            Kind::Authorizations => "authorizations",
            Kind::Cmk => "cmk",
            Kind::Kek => "kek",
            Kind::Cases => "cases",
        }
    }

    fn from_segment(s: &str) -> Option<Self> {
        Some(match s {
            "ecdhe" => Kind::Ecdhe,
            "keys" => Kind::Keys,
            "resources" => Kind::Resources,
            "authorizations" => Kind::Authorizations,
            "cmk" => Kind::Cmk,
            "kek" => Kind::Kek,
            "cases" => Kind::Cases,
            _ => return None,
        })
    }
}

/// What a KMS URI points at.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A collection, e.g. `/keys` (create) or `/cmk` (list).
    Collection(Kind),
    /// One object, e.g. `/keys/<id>`.
    Object(Kind, String),
    /// A resource's bound keys: `/resources/<id>/keys`.
    ResourceKeys(String),
    /// Who, other than members reading for themselves, received a resource's
    /// keys (key-access transparency, a Custos extension):
    /// `/resources/<id>/accesses`.
    ResourceAccesses(String),
    /// A resource's authorizations, optionally narrowed to one authId:
    /// `/resources/<id>/authorizations[?authId=<value>]`.
    ResourceAuthorizations(String, Option<String>),
    /// Whether, and how, one authId may read a resource (the KMS's
    /// authorization rule applied and explained, a Custos extension):
    /// `/resources/<id>/explain?authId=<value>`.
    ResourceExplain(String, Option<String>),
    /// `/ping`.
    Ping,
    /// `/publicKey` (bring your own key).
    PublicKey,
    /// `/policy`: the org policy (a Custos extension).
    Policy,
}

/// A canonical KMS URI.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KmsUri {
    domain: String,
    target: Target,
}

/// Why a string is not an acceptable KMS URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// Empty input.
    #[error("URI is empty")]
    Empty,
    /// Longer than [`MAX_URI_LEN`].
    #[error("URI is longer than {MAX_URI_LEN} bytes")]
    TooLong,
    /// Neither `kms://…` nor `/…`.
    #[error("URI must be absolute (kms://domain/...) or start with `/`")]
    Scheme,
    /// A relative URI where only absolute ones are allowed.
    #[error("a relative URI needs the KMS's own domain to resolve it")]
    Relative,
    /// The domain is not a valid host name.
    #[error("invalid KMS domain")]
    Domain,
    /// The path is not one the KMS knows.
    #[error("unknown KMS path")]
    Path,
    /// An object id with characters outside `A-Z a-z 0-9 - . _ ~` or too long.
    #[error("invalid object id")]
    Id,
    /// A query where none is allowed, or an unknown query parameter.
    #[error("unexpected query in URI")]
    Query,
}

/// Whether `d` is a valid (lowercase) KMS or org domain.
pub fn valid_domain(d: &str) -> bool {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (d, None),
    };
    if let Some(p) = port {
        if p.is_empty()
            || p.len() > 5
            || !p.bytes().all(|b| b.is_ascii_digit())
            || p.parse::<u32>().map_or(true, |n| n == 0 || n > 65535)
        {
            return false;
        }
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Canonical domain: lowercase, validated.
pub fn canonical_domain(d: &str) -> Result<String, UriError> {
    let d = d.to_ascii_lowercase();
    if valid_domain(&d) {
        Ok(d)
    } else {
        Err(UriError::Domain)
    }
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id != "."
        && id != ".."
        && id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn id(s: &str) -> Result<String, UriError> {
    if valid_id(s) {
        Ok(s.to_string())
    } else {
        Err(UriError::Id)
    }
}

/// The value of an `authId=<percent-encoded>` query, the only query the KMS knows.
fn auth_id_query(q: &str) -> Result<String, UriError> {
    let v = q.strip_prefix("authId=").ok_or(UriError::Query)?;
    if v.contains('&') || v.contains('=') {
        return Err(UriError::Query);
    }
    let v = percent_decode_str(v).decode_utf8().map_err(|_| UriError::Query)?;
    if v.is_empty() || v.len() > MAX_URI_LEN {
        return Err(UriError::Query);
    }
    Ok(v.into_owned())
}

impl KmsUri {
    /// Builds a URI from parts. The domain is canonicalized; ids are checked.
    pub fn new(domain: &str, target: Target) -> Result<Self, UriError> {
        let domain = canonical_domain(domain)?;
        match &target {
            Target::Object(_, i)
            | Target::ResourceKeys(i)
            | Target::ResourceAccesses(i)
            | Target::ResourceAuthorizations(i, _)
            | Target::ResourceExplain(i, _)
                if !valid_id(i) =>
            {
                return Err(UriError::Id);
            }
            _ => {}
        }
        Ok(Self { domain, target })
    }

    /// `kms://<domain>/<kind>/<id>`.
    pub fn object(domain: &str, kind: Kind, id: &str) -> Result<Self, UriError> {
        Self::new(domain, Target::Object(kind, id.to_string()))
    }

    /// Parses an absolute URI, or a relative one resolved against `own_domain`.
    pub fn parse(s: &str, own_domain: &str) -> Result<Self, UriError> {
        Self::parse_inner(s, Some(own_domain))
    }

    /// Parses an absolute URI only.
    pub fn parse_absolute(s: &str) -> Result<Self, UriError> {
        Self::parse_inner(s, None)
    }

    fn parse_inner(s: &str, own: Option<&str>) -> Result<Self, UriError> {
        if s.is_empty() {
            return Err(UriError::Empty);
        }
        if s.len() > MAX_URI_LEN {
            return Err(UriError::TooLong);
        }
        let (domain, rest) = if let Some(rest) = s.strip_prefix(SCHEME) {
            let slash = rest.find('/').ok_or(UriError::Path)?;
            (canonical_domain(&rest[..slash])?, &rest[slash..])
        } else if s.starts_with('/') {
            (canonical_domain(own.ok_or(UriError::Relative)?)?, s)
        } else {
            return Err(UriError::Scheme);
        };
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (rest, None),
        };
        let segs: Vec<&str> = path[1..].split('/').collect();
        let target = match segs.as_slice() {
            ["ping"] => Target::Ping,
            ["publicKey"] => Target::PublicKey,
            ["policy"] => Target::Policy,
            [k] => Target::Collection(Kind::from_segment(k).ok_or(UriError::Path)?),
            [k, i] => Target::Object(Kind::from_segment(k).ok_or(UriError::Path)?, id(i)?),
            ["resources", i, "keys"] => Target::ResourceKeys(id(i)?),
            ["resources", i, "accesses"] => Target::ResourceAccesses(id(i)?),
            ["resources", i, "authorizations"] => Target::ResourceAuthorizations(id(i)?, None),
            ["resources", i, "explain"] => Target::ResourceExplain(id(i)?, None),
            _ => return Err(UriError::Path),
        };
        let target = match (target, query) {
            (t, None) => t,
            (Target::ResourceAuthorizations(i, None), Some(q)) => {
                Target::ResourceAuthorizations(i, Some(auth_id_query(q)?))
            }
            (Target::ResourceExplain(i, None), Some(q)) => Target::ResourceExplain(i, Some(auth_id_query(q)?)),
            _ => return Err(UriError::Query),
        };
        Ok(Self { domain, target })
    }

    /// The KMS domain that owns this object.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// What the URI points at.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// The object id, for `Object` targets and resource sub-collections.
    pub fn id(&self) -> Option<&str> {
        match &self.target {
            Target::Object(_, i)
            | Target::ResourceKeys(i)
            | Target::ResourceAccesses(i)
            | Target::ResourceAuthorizations(i, _)
            | Target::ResourceExplain(i, _) => Some(i),
            _ => None,
        }
    }

    /// The object kind, for `Object` targets.
    pub fn kind(&self) -> Option<Kind> {
        match &self.target {
            Target::Object(k, _) => Some(*k),
            _ => None,
        }
    }

    /// True when this is an object of `kind`.
    pub fn is_object(&self, kind: Kind) -> bool {
        self.kind() == Some(kind)
    }

    /// The URI of the resource whose sub-collection this is.
    pub fn parent_resource(&self) -> Option<KmsUri> {
        match &self.target {
            Target::ResourceKeys(i)
            | Target::ResourceAccesses(i)
            | Target::ResourceAuthorizations(i, _)
            | Target::ResourceExplain(i, _) => {
                Some(KmsUri { domain: self.domain.clone(), target: Target::Object(Kind::Resources, i.clone()) })
            }
            _ => None,
        }
    }

    /// The relative form (`/keys/<id>`), as the draft's examples write it.
    pub fn relative(&self) -> String {
        let s = self.to_string();
        s[SCHEME.len() + self.domain.len()..].to_string()
    }
}

impl fmt::Display for KmsUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.domain)?;
        match &self.target {
            Target::Collection(k) => write!(f, "/{}", k.segment()),
            Target::Object(k, i) => write!(f, "/{}/{i}", k.segment()),
            Target::ResourceKeys(i) => write!(f, "/resources/{i}/keys"),
            Target::ResourceAccesses(i) => write!(f, "/resources/{i}/accesses"),
            Target::ResourceAuthorizations(i, None) => write!(f, "/resources/{i}/authorizations"),
            Target::ResourceAuthorizations(i, Some(a)) => {
                write!(f, "/resources/{i}/authorizations?authId={}", utf8_percent_encode(a, QUERY_VALUE))
            }
            Target::ResourceExplain(i, None) => write!(f, "/resources/{i}/explain"),
            Target::ResourceExplain(i, Some(a)) => {
                write!(f, "/resources/{i}/explain?authId={}", utf8_percent_encode(a, QUERY_VALUE))
            }
            Target::Ping => f.write_str("/ping"),
            Target::PublicKey => f.write_str("/publicKey"),
            Target::Policy => f.write_str("/policy"),
        }
    }
}

impl FromStr for KmsUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, UriError> {
        Self::parse_absolute(s)
    }
}

impl serde::Serialize for KmsUri {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for KmsUri {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse_absolute(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OWN: &str = "kms.example.com";

    #[test]
    fn relative_and_absolute_are_the_same_object() {
        let a = KmsUri::parse("/keys/abc", OWN).unwrap();
        let b = KmsUri::parse("kms://KMS.Example.com/keys/abc", OWN).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_string(), "kms://kms.example.com/keys/abc");
        assert_eq!(a.relative(), "/keys/abc");
        assert!(a.is_object(Kind::Keys));
    }

    #[test]
    fn shapes() {
        let u = |s| KmsUri::parse(s, OWN).map(|u| u.target().clone());
        assert_eq!(u("/ecdhe").unwrap(), Target::Collection(Kind::Ecdhe));
        assert_eq!(u("kms://kms.example.com/ecdhe").unwrap(), Target::Collection(Kind::Ecdhe));
        assert_eq!(u("/ping").unwrap(), Target::Ping);
        assert_eq!(u("/publicKey").unwrap(), Target::PublicKey);
        assert_eq!(u("/policy").unwrap(), Target::Policy);
        assert_eq!(u("/cases/c1").unwrap(), Target::Object(Kind::Cases, "c1".into()));
        assert_eq!(u("/resources/r1/keys").unwrap(), Target::ResourceKeys("r1".into()));
        assert_eq!(u("/resources/r1/accesses").unwrap(), Target::ResourceAccesses("r1".into()));
        assert_eq!(
            u("/resources/r1/explain?authId=carol%40a.test").unwrap(),
            Target::ResourceExplain("r1".into(), Some("carol@a.test".into()))
        );
        assert!(u("/resources/r1/explain?who=carol").is_err());
        assert_eq!(
            u("/resources/r1/authorizations?authId=alice%40acme.com").unwrap(),
            Target::ResourceAuthorizations("r1".into(), Some("alice@acme.com".into()))
        );
    }

    #[test]
    fn query_values_round_trip_encoded() {
        let uri =
            KmsUri::new(OWN, Target::ResourceAuthorizations("r1".into(), Some("kms://other/resources/x y".into())))
                .unwrap();
        let s = uri.to_string();
        assert_eq!(s, "kms://kms.example.com/resources/r1/authorizations?authId=kms%3A%2F%2Fother%2Fresources%2Fx%20y");
        assert_eq!(KmsUri::parse_absolute(&s).unwrap(), uri);
    }

    #[test]
    fn refusals() {
        let e = |s: &str| KmsUri::parse(s, OWN).unwrap_err();
        assert_eq!(e(""), UriError::Empty);
        assert_eq!(e("keys/abc"), UriError::Scheme);
        assert_eq!(e("https://kms.example.com/keys/a"), UriError::Scheme);
        assert_eq!(e("kms://bad_domain/keys/a"), UriError::Domain);
        assert_eq!(e("kms://user@host/keys/a"), UriError::Domain);
        assert_eq!(e("kms://kms.example.com"), UriError::Path);
        assert_eq!(e("/secrets/a"), UriError::Path);
        assert_eq!(e("/keys/a/b"), UriError::Path);
        assert_eq!(e("/keys/"), UriError::Id);
        assert_eq!(e("/keys/.."), UriError::Id);
        assert_eq!(e("/keys/a%2Fb"), UriError::Id);
        assert_eq!(e("/keys/a?authId=x"), UriError::Query);
        assert_eq!(e("/resources/r/authorizations?user=x"), UriError::Query);
        assert_eq!(e("/resources/r/authorizations?authId=a&x=y"), UriError::Query);
        assert_eq!(e(&format!("/keys/{}", "a".repeat(3000))), UriError::TooLong);
        assert_eq!(KmsUri::parse_absolute("/keys/a").unwrap_err(), UriError::Relative);
    }
}
