//! Compliance cases: opened by officers, decided by approvers (m of n), read by both and by admins.

use kms_protocol::{Kind, KmsUri, Response, Status};

use super::{err, not_found, Answer, Engine};
use crate::auth::Principal;
use crate::error::EngineError;
use crate::from_ms;
use crate::policy::Loaded;

/// Document kind of compliance cases in the store.
const CASE_KIND: &str = "case";

fn decode_case(body: &str) -> Result<kms_protocol::policy::CaseObject, EngineError> {
    serde_json::from_str(body)
        .map_err(|e| EngineError::Policy(format!("a stored compliance case does not decode: {e}")))
}

impl Engine {
    /// `retrieve /cases`.
    pub(super) async fn list_cases(&self, rid: &str) -> Answer {
        let mut list = Vec::new();
        for d in self.store.list_documents(CASE_KIND).await? {
            list.push(decode_case(&d.body)?);
        }
        let mut resp = Response::new(Status::OK, rid);
        resp.cases = Some(list);
        Ok(resp)
    }

    /// `retrieve /cases/<id>`.
    pub(super) async fn retrieve_case(&self, uri: &KmsUri, rid: &str) -> Answer {
        let Some((case, _)) = self.load_case(uri).await? else { return Ok(not_found(rid)) };
        let mut resp = Response::new(Status::OK, rid);
        resp.case = Some(case);
        Ok(resp)
    }

    pub(super) async fn load_case(
        &self,
        uri: &KmsUri,
    ) -> Result<Option<(kms_protocol::policy::CaseObject, i64)>, EngineError> {
        let Some(id) = self.own_id(uri).filter(|_| uri.is_object(Kind::Cases)) else { return Ok(None) };
        match self.store.get_document(CASE_KIND, id).await? {
            Some(d) => Ok(Some((decode_case(&d.body)?, d.version))),
            None => Ok(None),
        }
    }

    /// `create /cases` by an officer (the rule checked who).
    pub(super) async fn create_case(
        &self,
        policy: &Loaded,
        p: &Principal,
        case: &kms_protocol::policy::CaseRequest,
        now: i64,
        rid: &str,
    ) -> Answer {
        use kms_protocol::policy::{CaseObject, CaseState};
        let user_id = p.id(&self.cfg.kms_domain);
        let required = policy.policy.approval.as_ref().map_or(0, |a| a.required);
        let id = uuid::Uuid::new_v4().to_string();
        let obj = CaseObject {
            uri: self.uri(Kind::Cases, &id),
            officer: user_id,
            spaces: case.spaces.clone(),
            from: case.from,
            until: case.until,
            reason: case.reason.clone(),
            state: if required == 0 { CaseState::Approved } else { CaseState::Pending },
            approvals: Vec::new(),
            required,
            create_date: from_ms(now),
        };
        let body = serde_json::to_string(&obj).map_err(|e| EngineError::Policy(e.to_string()))?;
        if !self.store.put_document(CASE_KIND, &id, 0, &body, now).await? {
            return Err(EngineError::Internal("case id collision"));
        }
        let mut resp = Response::new(Status::CREATED, rid);
        resp.case = Some(obj);
        Ok(resp)
    }

    /// `update /cases/<id>`: an approver's decision, or closing (the rule checked who).
    pub(super) async fn decide_case(
        &self,
        policy: &Loaded,
        p: &Principal,
        uri: &KmsUri,
        decision: kms_protocol::policy::CaseDecision,
        now: i64,
        rid: &str,
    ) -> Answer {
        use kms_protocol::policy::{CaseDecision, CaseState};
        let user_id = &p.id(&self.cfg.kms_domain);
        // Approvals race: re-read and compare-and-swap until one write wins.
        for _ in 0..8 {
            let Some((mut case, version)) = self.load_case(uri).await? else { return Ok(not_found(rid)) };
            match decision {
                CaseDecision::Approve | CaseDecision::Deny => {
                    if case.state != CaseState::Pending && case.state != CaseState::Approved {
                        return Ok(err(Status::CONFLICT, rid, "this case is closed or denied"));
                    }
                    if decision == CaseDecision::Deny {
                        case.state = CaseState::Denied;
                    } else if !case.approvals.contains(user_id) {
                        case.approvals.push(user_id.clone());
                    }
                    // The rule in force decides (as it does at release): approvals by current approvers.
                    let (valid, required) = super::authz::approvals_in_force(policy.policy.approval.as_ref(), &case);
                    case.required = required;
                    if case.state == CaseState::Pending && valid as u32 >= required {
                        case.state = CaseState::Approved;
                    }
                }
                CaseDecision::Close => case.state = CaseState::Closed,
            }
            let id = self.own_id(uri).unwrap_or_default().to_string();
            let body = serde_json::to_string(&case).map_err(|e| EngineError::Policy(e.to_string()))?;
            if self.store.put_document(CASE_KIND, &id, version, &body, now).await? {
                let mut resp = Response::new(Status::OK, rid);
                resp.case = Some(case);
                return Ok(resp);
            }
        }
        Ok(err(Status::CONFLICT, rid, "the case kept changing; retry"))
    }
}
