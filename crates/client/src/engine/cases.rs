//! Compliance cases at the KMS: an officer opens one naming spaces (their KMS
//! resources) and a range of key bind dates; the org's designated approvers
//! approve or deny it; the officer or an admin closes it. When the org
//! requires approval, an officer's reads need an approved case covering the
//! space and the key's bind date (see [`crate::ComplianceReader`]).

use kms_protocol::message::RequestBody;
use kms_protocol::policy::{CaseDecision, CaseObject, CaseRequest};
use kms_protocol::{Kind, KmsUri, Method, Response};
use time::OffsetDateTime;

use super::{missing, KmsRequest};
use crate::error::{Error, Result};

/// What a new case covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewCase {
    /// The spaces' KMS resources.
    pub spaces: Vec<KmsUri>,
    /// Only keys bound at or after this time.
    pub from: Option<OffsetDateTime>,
    /// Only keys bound before this time.
    pub until: Option<OffsetDateTime>,
    /// Why (a matter number; no personal data).
    pub reason: Option<String>,
}

/// `create /cases`. Refuses an empty list of spaces and an empty range.
pub fn open(case: NewCase) -> Result<KmsRequest> {
    if case.spaces.is_empty() {
        return Err(Error::Invalid("a case covers at least one space".into()));
    }
    if let (Some(f), Some(u)) = (case.from, case.until) {
        if f >= u {
            return Err(Error::Invalid("a case's range must start before it ends".into()));
        }
    }
    let body = RequestBody {
        case: Some(CaseRequest {
            spaces: case.spaces.iter().map(|s| s.to_string()).collect(),
            from: case.from,
            until: case.until,
            reason: case.reason,
        }),
        ..RequestBody::default()
    };
    Ok(KmsRequest::new(Method::Create, "/cases", body))
}

/// `update <case>`: approve, deny or close it.
pub fn decide(case: &KmsUri, decision: CaseDecision) -> KmsRequest {
    KmsRequest::new(Method::Update, case.to_string(), RequestBody { decision: Some(decision), ..RequestBody::default() })
}

/// `retrieve /cases`: the cases the caller is a party to (officer, approver, admin).
pub fn list() -> KmsRequest {
    KmsRequest::new(Method::Retrieve, "/cases", RequestBody::default())
}

/// The case in the answer to [`open`] or [`decide`].
pub fn case(resp: Response) -> Result<CaseObject> {
    resp.case.ok_or_else(|| missing("the case"))
}

/// The cases in the answer to [`list`].
pub fn cases(resp: Response) -> Vec<CaseObject> {
    resp.cases.unwrap_or_default()
}

/// A case of the KMS at `kms_domain` from what a person gives: its id, or
/// its `kms://<kms_domain>/cases/<id>` URI.
pub fn case_uri(arg: &str, kms_domain: &str) -> Result<KmsUri> {
    let uri = if arg.starts_with("kms://") {
        KmsUri::parse_absolute(arg).ok()
    } else {
        KmsUri::object(kms_domain, Kind::Cases, arg).ok()
    };
    match uri {
        Some(u) if u.is_object(Kind::Cases) && u.domain() == kms_domain => Ok(u),
        _ => Err(Error::Invalid(format!(
            "{} is not a compliance case of {kms_domain} (an id, or kms://{kms_domain}/cases/<id>)",
            arg.escape_debug()
        ))),
    }
}

/// A KMS resource URI as given (`kms://…/resources/<id>`), canonical.
pub fn resource_uri(arg: &str) -> Result<KmsUri> {
    KmsUri::parse_absolute(arg)
        .ok()
        .filter(|u| u.is_object(Kind::Resources))
        .ok_or_else(|| Error::Invalid(format!("{} is not a KMS resource URI", arg.escape_debug())))
}

/// The resource the core names for a space, checked to be a resource URI
/// (what the core says is not trusted further: the KMS checks the case
/// against its own resources).
pub fn claimed_resource(space: &str, claimed: &str) -> Result<KmsUri> {
    KmsUri::parse_absolute(claimed)
        .ok()
        .filter(|u| u.is_object(Kind::Resources))
        .ok_or_else(|| Error::Tampered(format!("the core names no valid resource for space {}", space.escape_debug())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn case_uris_from_ids_or_uris_of_this_kms_only() {
        let u = case_uri("c1", "kms.a.test").unwrap();
        assert_eq!(u.to_string(), "kms://kms.a.test/cases/c1");
        assert_eq!(case_uri("kms://kms.a.test/cases/c1", "kms.a.test").unwrap(), u);
        for bad in ["kms://kms.b.test/cases/c1", "kms://kms.a.test/resources/r1", "a/b"] {
            assert!(matches!(case_uri(bad, "kms.a.test"), Err(Error::Invalid(_))), "{bad}");
        }
        assert!(resource_uri("kms://kms.a.test/resources/r1").is_ok());
        assert!(resource_uri("kms://kms.a.test/keys/k1").is_err());
    }

    #[test]
    fn a_case_request_names_its_spaces_and_range() {
        let r = KmsUri::parse_absolute("kms://kms.a.test/resources/r1").unwrap();
        let t = OffsetDateTime::UNIX_EPOCH;
        let new = |from, until| NewCase { spaces: vec![r.clone()], from, until, reason: Some("m-1".into()) };
        let req = open(new(Some(t), None)).unwrap();
        assert_eq!((req.method, req.uri.as_str()), (Method::Create, "/cases"));
        let c = req.body.case.unwrap();
        assert_eq!(c.spaces, vec![r.to_string()]);
        assert_eq!(c.from, Some(t));
        assert!(open(new(Some(t), Some(t))).is_err());
        assert!(open(NewCase { spaces: vec![], ..new(None, None) }).is_err());
        let d = decide(&case_uri("c1", "kms.a.test").unwrap(), CaseDecision::Approve);
        assert_eq!((d.method, d.uri.as_str(), d.body.decision), (Method::Update, "kms://kms.a.test/cases/c1", Some(CaseDecision::Approve)));
    }
}
