//! Removing a member completely, and key-access transparency: the two
//! places where the SDK holds the KMS's authorizations against the space's
//! member list (which only the core keeps, and the KMS never sees).
//!
//! The rule: **a space's authorizations at the KMS are exactly its members.**
//! Removing someone deletes their authorization and then every other one the
//! member list does not account for: identities authorized at the KMS but
//! absent from the list (a second account, someone of another org), resource
//! URIs (everyone authorized there) and anonymous links. The KMS itself takes,
//! with the removed member, the resources and links they created; the SDK
//! takes the identities, which only the member list tells apart from a
//! colleague. Then it asks the KMS's rule (`…/explain`) whether the removed
//! person still has a way in, and only then binds a fresh key.

use std::collections::HashSet;

use kms_protocol::message::{AuthorizationObject, RequestBody};
use kms_protocol::uri::KmsUri;
use kms_protocol::{AccessObject, Method};

use crate::error::{Error, Result};
use crate::session::Session;
use crate::types::{SpaceId, UserId};

/// Rounds of "delete what the list does not account for" before giving up
/// (someone still authorized could be adding ways in as fast as we remove them).
const ROUNDS: usize = 3;

/// A deletion answered 404 ("no such object"): gone meanwhile, as the KMS
/// takes links and resources with their creator. Anything else is an error.
fn gone_already_is_fine(r: Result<kms_protocol::Response>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(Error::NotAuthorized { reason }) if reason.contains("no such") => Ok(()),
        Err(e) => Err(e),
    }
}

impl Session {
    /// Removes `user`: de-authorizes them at the KMS and removes them on the
    /// core, then makes the space's authorizations match its member list
    /// and checks with the KMS that `user` has no way in left, and only then
    /// binds a fresh key, so nothing sent afterwards is readable by them.
    /// `user` is matched without regard to ASCII case, as an id typed in
    /// another case must not leave the real one in place.
    ///
    /// Fails with [`Error::RemovalIncomplete`] (and rotates nothing) when a
    /// way in remains, and with [`Error::NotAuthorized`] when you may not
    /// change this space's authorizations.
    pub async fn remove_member(&self, space: &SpaceId, user: &UserId) -> Result<()> {
        let resource = self.resource_of(space).await?;
        self.own_space(&resource)?;
        let me = self.kms.user_id().await?;
        if user.eq_ignore_ascii_case(&me) {
            return Err(Error::Invalid("you cannot remove yourself this way: leave the space instead".into()));
        }
        let authorizations = self.authorizations(&resource).await?;
        let (_, _, members) = self.core.space(space).await?;
        // Every spelling of the removed user, at the KMS or the core.
        let mut removed: Vec<String> = authorizations
            .iter()
            .filter_map(|a| a.auth_id.clone())
            .chain(members.iter().map(|m| m.user_id.clone()))
            .filter(|id| id.eq_ignore_ascii_case(user))
            .collect();
        removed.push(user.to_string());
        removed.sort();
        removed.dedup();
        // The KMS first: that is what cuts them off.
        self.close_ways_in(space, &resource, &me, &removed).await?;
        let mut core_result = Ok(());
        for id in &removed {
            match self.core.remove_member(space, id).await {
                Ok(()) | Err(Error::Core { status: 404, .. }) => {}
                Err(e) => core_result = Err(e),
            }
        }
        // Rotate whatever the core said: the KMS has already cut them off.
        self.rotate_past(space, &resource, removed.as_slice()).await?;
        core_result
    }

    /// Deletes every authorization the member list does not account for, then
    /// proves none is left and that `removed` has no way in.
    async fn close_ways_in(&self, space: &SpaceId, resource: &KmsUri, me: &str, removed: &[String]) -> Result<()> {
        let is_removed = |id: &str| removed.iter().any(|r| r == id);
        let mut stray = Vec::new();
        for _ in 0..ROUNDS {
            let (_, _, members) = self.core.space(space).await?;
            let mut listed: HashSet<String> = members.into_iter().map(|m| m.user_id).collect();
            listed.insert(me.to_string());
            listed.retain(|m| !is_removed(m));
            stray = self
                .authorizations(resource)
                .await?
                .into_iter()
                .filter(|a| match a.auth_id.as_deref() {
                    // A user (or service) id: kept while the member list shows it.
                    Some(id) if !id.starts_with(kms_protocol::uri::SCHEME) => !listed.contains(id),
                    // A resource URI or an anonymous link: never a member.
                    _ => true,
                })
                .collect::<Vec<_>>();
            if stray.is_empty() {
                break;
            }
            let ids: Vec<String> = stray.iter().filter_map(|a| a.auth_id.clone()).collect();
            if !ids.is_empty() {
                let body =
                    RequestBody { resource_uri: Some(resource.to_string()), auth_ids: Some(ids), ..Default::default() };
                gone_already_is_fine(self.kms.call(Method::Delete, "/authorizations", body).await)?;
            }
            for link in stray.iter().filter(|a| a.auth_id.is_none()) {
                gone_already_is_fine(
                    self.kms.call(Method::Delete, &link.uri.to_string(), RequestBody::default()).await,
                )?;
            }
        }
        if !stray.is_empty() {
            let names: Vec<String> =
                stray.iter().map(|a| a.auth_id.clone().unwrap_or_else(|| "an anonymous link".into())).collect();
            return Err(Error::RemovalIncomplete(format!(
                "authorizations keep coming back faster than they can be removed: {}",
                names.join(", ")
            )));
        }
        for id in removed {
            let access = self.explain(resource, id).await?;
            if access.authorized {
                return Err(Error::RemovalIncomplete(format!(
                    "the KMS still lets {id} read the space ({})",
                    access.via.as_deref().unwrap_or("how, it did not say")
                )));
            }
        }
        Ok(())
    }

    /// Binds a fresh key, and makes sure it is the newest: a bind the removed
    /// person had started before their removal could land just after ours
    /// (senders use the newest key), so one bound later by them, or by anyone
    /// the member list does not show, is outrun.
    async fn rotate_past(&self, space: &SpaceId, resource: &KmsUri, removed: &[String]) -> Result<()> {
        for _ in 0..ROUNDS {
            let ours = self.rotate(space).await?;
            let body = RequestBody { count: Some(1), ..Default::default() };
            let newest =
                self.kms.call(Method::Retrieve, &format!("{resource}/keys"), body).await?.keys.unwrap_or_default();
            let Some(k) = newest.first() else { return Ok(()) };
            if k.uri == ours.uri {
                return Ok(());
            }
            let (_, _, members) = self.core.space(space).await?;
            let listed = members.iter().any(|m| m.user_id == k.user_id);
            if listed && !removed.iter().any(|r| r == &k.user_id) {
                return Ok(()); // a member rotated meanwhile: fine
            }
        }
        Err(Error::RemovalIncomplete("keys bound by the removed person keep appearing after ours".into()))
    }

    async fn authorizations(&self, resource: &KmsUri) -> Result<Vec<AuthorizationObject>> {
        let resp =
            self.kms.call(Method::Retrieve, &format!("{resource}/authorizations"), RequestBody::default()).await?;
        Ok(resp.authorizations.unwrap_or_default())
    }

    /// Whether, and how, the KMS's authorization rule lets `auth_id` read
    /// the space's keys now (`…/explain`; members and org admins may ask).
    pub async fn explain_access(&self, space: &SpaceId, auth_id: &str) -> Result<kms_protocol::AccessExplanation> {
        let resource = self.resource_of(space).await?;
        self.own_space(&resource)?;
        self.explain(&resource, auth_id).await
    }

    async fn explain(&self, resource: &KmsUri, auth_id: &str) -> Result<kms_protocol::AccessExplanation> {
        let uri = KmsUri::new(
            resource.domain(),
            kms_protocol::Target::ResourceExplain(resource.id().unwrap_or_default().to_string(), Some(auth_id.into())),
        )
        .map_err(|e| Error::Invalid(format!("cannot ask about {auth_id}: {e}")))?;
        let resp = self.kms.call(Method::Retrieve, &uri.to_string(), RequestBody::default()).await?;
        resp.access.ok_or_else(|| Error::Tampered("the KMS answered an explain without an answer".into()))
    }

    /// Key-access transparency: every release and refusal of this space's
    /// keys from the KMS's audit log, except members reading for themselves
    /// (a release granted through the reader's own authorization while the
    /// member list shows them, since they were added): services, compliance
    /// officers, other KMSs, anonymous links, admins, people through a
    /// resource, and anyone authorized at the KMS without being a listed member.
    pub async fn key_accesses(&self, space: &SpaceId) -> Result<Vec<AccessObject>> {
        let resource = self.resource_of(space).await?;
        let (_, _, members) = self.core.space(space).await?;
        let member_since = |actor: &str| members.iter().find(|m| m.user_id == actor).map(|m| m.added_at.unwrap_or(0));
        let mut out = Vec::new();
        let mut after = 0u64;
        loop {
            let body = RequestBody { after: Some(after), count: Some(500), ..Default::default() };
            let resp = self.kms.call(Method::Retrieve, &format!("{resource}/accesses"), body).await?;
            let page = resp.accesses.unwrap_or_default();
            let done = page.len() < 500;
            after = page.last().map_or(after, |a| a.seq);
            out.extend(page.into_iter().filter(|a| {
                let own_read = a.actor_kind == "user"
                    && a.action == "key_release"
                    && a.via.as_deref() == Some("member")
                    && member_since(&a.actor).is_some_and(|since| a.time as i64 >= since);
                !own_read
            }));
            if done || out.len() >= 100_000 {
                return Ok(out);
            }
        }
    }
}
