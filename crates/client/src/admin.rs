//! Org administration at the KMS, on the session's own KMS channel: the org
//! policy (org admins) and compliance cases (officers, approvers, admins).
//! Thin I/O over [`crate::engine::policy`] and [`crate::engine::cases`],
//! which build the requests and read the answers.

use kms_protocol::policy::{CaseDecision, CaseObject, PolicyObject};
use kms_protocol::KmsUri;
use serde_json::{Map, Value};

use crate::engine::cases::{self, NewCase};
use crate::engine::policy::{self, PolicyChange, WRITE_ATTEMPTS};
use crate::engine::KmsRequest;
use crate::error::{Error, Result};
use crate::session::Session;
use crate::types::SpaceId;

impl Session {
    async fn kms_request(&self, req: KmsRequest) -> Result<kms_protocol::Response> {
        self.kms.call(req.method, &req.uri, req.body).await
    }

    /// The org policy and its version (org admins).
    pub async fn org_policy(&self) -> Result<PolicyObject> {
        policy::policy(self.kms_request(policy::read()).await?)
    }

    /// Changes the org policy (org admins): reads it, lets `edit` change the
    /// document, and writes it back naming the version read. When another
    /// admin changed it in between, reads and edits again (up to
    /// [`WRITE_ATTEMPTS`] times, then [`Error::Kms`] with status 409). An
    /// error from `edit` stops the change; SDK errors arrive as `E::from`.
    pub async fn edit_org_policy<E: From<Error>>(
        &self,
        mut edit: impl FnMut(&mut Map<String, Value>) -> std::result::Result<(), E>,
    ) -> std::result::Result<PolicyChange, E> {
        for _ in 0..WRITE_ATTEMPTS {
            let mut draft = policy::draft(self.kms_request(policy::read()).await?)?;
            edit(&mut draft.document)?;
            match self.kms_request(policy::write(draft)).await {
                Ok(resp) => return Ok(policy::change(&resp)),
                Err(e) if policy::is_conflict(&e) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Kms { status: 409, reason: "the policy kept changing under this change; try again".into() }.into())
    }

    /// The KMS resource a case about `space` names: a `kms://…/resources/…`
    /// URI as given, else the resource the core lists for the space (to its
    /// compliance readers, else to its members).
    pub async fn case_resource(&self, space: &str) -> Result<KmsUri> {
        if space.starts_with("kms://") {
            return cases::resource_uri(space);
        }
        let id = SpaceId::from(space);
        // Officers are compliance readers at the core; members may name their own spaces.
        let claimed = match self.core.compliance_space(&id).await {
            Ok(c) => c.space.resource_uri,
            Err(Error::Core { status: 404, .. }) => self.core.space(&id).await?.0.resource_uri,
            Err(e) => return Err(e),
        };
        cases::claimed_resource(space, &claimed)
    }

    /// Opens a compliance case (officers).
    pub async fn open_case(&self, case: NewCase) -> Result<CaseObject> {
        cases::case(self.kms_request(cases::open(case)?).await?)
    }

    /// Approves, denies or closes a case ([`Session::case_uri`] names it).
    pub async fn decide_case(&self, case: &KmsUri, decision: CaseDecision) -> Result<CaseObject> {
        cases::case(self.kms_request(cases::decide(case, decision)).await?)
    }

    /// The cases you are a party to (officer, approver, admin).
    pub async fn cases(&self) -> Result<Vec<CaseObject>> {
        Ok(cases::cases(self.kms_request(cases::list()).await?))
    }

    /// A case of this org's KMS from its id or its `kms://` URI.
    pub fn case_uri(&self, case: &str) -> Result<KmsUri> {
        cases::case_uri(case, self.kms.domain())
    }
}
