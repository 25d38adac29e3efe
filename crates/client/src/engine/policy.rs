//! The org policy at the KMS, as its admins change it: read the document,
//! edit it, write it back naming the version read. When another admin wrote
//! in between, the KMS refuses the write with 409 ([`is_conflict`]) and the
//! edit is redone on the new version, up to [`WRITE_ATTEMPTS`] times.
//!
//! The document is edited as JSON (the KMS checks and canonicalizes it), so
//! that a policy written by a newer KMS round-trips whole.

use kms_protocol::message::RequestBody;
use kms_protocol::policy::PolicyObject;
use kms_protocol::{Method, Response};
use serde_json::{Map, Value};

use super::{missing, KmsRequest};
use crate::error::{Error, Result};

/// How many times an edit is tried against a policy others keep changing.
pub const WRITE_ATTEMPTS: usize = 5;

/// The policy as read, for editing: its version and its document.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyDraft {
    /// The version read (the write names it).
    pub version: u64,
    /// The document (`admins`, `services`, `legalHolds`…).
    pub document: Map<String, Value>,
}

/// What a write changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyChange {
    /// The version now in force (0 when the KMS did not say).
    pub version: u64,
    /// The KMS's summary of the changes (`None`: nothing changed, or it did not say).
    pub changes: Option<String>,
}

/// `retrieve /policy`.
pub fn read() -> KmsRequest {
    KmsRequest::new(Method::Retrieve, "/policy", RequestBody::default())
}

/// The policy in the answer to [`read`].
pub fn policy(resp: Response) -> Result<PolicyObject> {
    resp.policy.ok_or_else(|| missing("a policy"))
}

/// The policy in the answer to [`read`], as a draft to edit.
pub fn draft(resp: Response) -> Result<PolicyDraft> {
    let p = policy(resp)?;
    match serde_json::to_value(&p.policy) {
        Ok(Value::Object(document)) => Ok(PolicyDraft { version: p.version, document }),
        _ => Err(Error::Kms { status: 500, reason: "the KMS answered a policy that is not an object".into() }),
    }
}

/// `update /policy`: the edited document, naming the version it was read at.
pub fn write(draft: PolicyDraft) -> KmsRequest {
    let body = RequestBody {
        policy: Some(Value::Object(draft.document)),
        policy_version: Some(draft.version),
        ..Default::default()
    };
    KmsRequest::new(Method::Update, "/policy", body)
}

/// What the answer to [`write()`] says changed.
pub fn change(resp: &Response) -> PolicyChange {
    PolicyChange { version: resp.policy.as_ref().map(|p| p.version).unwrap_or_default(), changes: resp.reason.clone() }
}

/// Whether a write failed because the policy changed since it was read.
pub fn is_conflict(e: &Error) -> bool {
    matches!(e, Error::Kms { status: 409, .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kms_protocol::Status;

    #[test]
    fn a_draft_is_written_back_naming_its_version() {
        let mut resp = Response::new(Status::OK, "r1");
        resp.policy = Some(PolicyObject { version: 7, update_date: None, policy: Default::default() });
        let mut d = draft(resp).unwrap();
        assert_eq!(d.version, 7);
        d.document.insert("admins".into(), serde_json::json!(["ann@a.test"]));
        let req = write(d);
        assert_eq!((req.method, req.uri.as_str()), (Method::Update, "/policy"));
        assert_eq!(req.body.policy_version, Some(7));
        assert_eq!(req.body.policy.unwrap()["admins"][0], "ann@a.test");
        assert!(matches!(draft(Response::new(Status::OK, "r2")), Err(Error::Kms { status: 500, .. })));
        assert!(is_conflict(&Error::Kms { status: 409, reason: String::new() }));
    }
}
