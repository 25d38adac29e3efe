//! Compliance reads: an org's compliance readers (`compliance_readers` in
//! the org's `[[orgs]]` table) may read, never write, every space that has
//! or had a member of their org.
//!
//! What they get is what members get to read, and nothing more: the space's
//! routing metadata, members (current and former), its event history and
//! its file chunks, all ciphertext. The core still learns nothing of the
//! content: opening it takes keys that only the org's KMS hands out, to its
//! compliance officers, under the org's policy and audit.
//!
//! Reads go through their own routes (`GET /v1/compliance/…`), so that the
//! member routes keep exactly one rule (members only) and nothing a reader
//! can do ever writes: posting, membership changes, read markers and live
//! sockets stay member-only. A reader outside their scope, and anyone who is
//! not a reader, gets the answer a non-member gets for a space: "no such
//! space" (or file), the same as for a space that does not exist.
//!
//! Every compliance read is logged with the reader and the space or file
//! ids (target `custos_core::compliance`), never content.

use core_store::{Event, FileRecord, Membership, Space};

use crate::error::ApiError;
use crate::service::{check_id, Caller, Core};

/// A space as a compliance reader sees it.
#[derive(Debug, Clone)]
pub struct ComplianceSpace {
    /// The space (its title is sealed metadata: ciphertext).
    pub space: Space,
    /// Current members and their roles.
    pub members: Vec<Membership>,
    /// Users who were members and are no longer.
    pub former_members: Vec<String>,
}

fn in_org(user_id: &str, domain: &str) -> bool {
    user_id.rsplit_once('@').is_some_and(|(_, d)| d == domain)
}

impl Core {
    /// The space, if `c` is a compliance reader of an org that has or had a
    /// member in it; else "no such space", as for a non-member.
    async fn compliance_scope(&self, c: &Caller, id: &str) -> Result<Space, ApiError> {
        check_id(id, "space")?;
        let Some(org) = self.cfg.compliance_org_of(&c.user_id) else {
            return Err(ApiError::not_found("space"));
        };
        let Some(space) = self.store.get_space(id).await? else {
            return Err(ApiError::not_found("space"));
        };
        // The creator is the first member, of the space's org; otherwise
        // look for anyone of the reader's org who ever joined.
        let had_member =
            space.org == org.domain || self.store.member_history(id).await?.iter().any(|u| in_org(u, &org.domain));
        if !had_member {
            tracing::info!(
                target: "custos_core::compliance",
                reader = %c.user_id,
                space = %id,
                "compliance read refused: no member of the reader's org"
            );
            return Err(ApiError::not_found("space"));
        }
        Ok(space)
    }

    fn log_read(c: &Caller, space: &str, what: &'static str) {
        tracing::info!(target: "custos_core::compliance", reader = %c.user_id, space = %space, read = what, "compliance read");
    }

    /// A space, its members and its former members.
    pub async fn compliance_space(&self, c: &Caller, id: &str) -> Result<ComplianceSpace, ApiError> {
        let space = self.compliance_scope(c, id).await?;
        let members = self.store.members(id).await?;
        let former_members = self
            .store
            .member_history(id)
            .await?
            .into_iter()
            .filter(|u| !members.iter().any(|m| &m.user_id == u))
            .collect();
        Self::log_read(c, id, "space");
        Ok(ComplianceSpace { space, members, former_members })
    }

    /// A page of a space's events, as [`Core::events`] pages them.
    pub async fn compliance_events(
        &self,
        c: &Caller,
        id: &str,
        after: Option<i64>,
        before: Option<i64>,
        limit: Option<u32>,
    ) -> Result<Vec<Event>, ApiError> {
        self.compliance_scope(c, id).await?;
        let page = self.events_page(id, after, before, limit).await?;
        Self::log_read(c, id, "events");
        Ok(page)
    }

    async fn compliance_file_scope(&self, c: &Caller, file_id: &str) -> Result<FileRecord, ApiError> {
        check_id(file_id, "file")?;
        if self.cfg.compliance_org_of(&c.user_id).is_none() {
            return Err(ApiError::not_found("file"));
        }
        let f = self.store.file(file_id).await?.ok_or_else(|| ApiError::not_found("file"))?;
        self.compliance_scope(c, &f.space_id).await.map_err(|e| match e.code {
            "not_found" => ApiError::not_found("file"),
            _ => e,
        })?;
        Ok(f)
    }

    /// A file's record (sealed metadata).
    pub async fn compliance_file(&self, c: &Caller, file_id: &str) -> Result<FileRecord, ApiError> {
        let f = self.compliance_file_scope(c, file_id).await?;
        tracing::info!(target: "custos_core::compliance", reader = %c.user_id, space = %f.space_id, file = %f.id, read = "file", "compliance read");
        Ok(f)
    }

    /// One chunk of a ready file (ciphertext).
    pub async fn compliance_chunk(&self, c: &Caller, file_id: &str, index: i64) -> Result<bytes::Bytes, ApiError> {
        let f = self.compliance_file_scope(c, file_id).await?;
        let b = self.read_chunk(&f, index).await?;
        tracing::info!(target: "custos_core::compliance", reader = %c.user_id, space = %f.space_id, file = %f.id, chunk = index, read = "chunk", "compliance read");
        Ok(b)
    }
}
