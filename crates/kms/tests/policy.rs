//! Enterprise control through the engine: the policy admin API, services
//! (default deny, scopes, revocation, time ranges, org agents), disabled users
//! and devices, compliance officers with cases and m-of-n approval, and the
//! rekeyAfter hint — refusals as carefully as successes, and the audit trail.

mod common;

use std::sync::Arc;

use audit::{Action, ActorKind, Query};
use common::{client_info, harness, harness_audited, set_policy, Client, DOMAIN};
use kms::Engine;
use kms_protocol::{Credential, Method, ProtocolError, Status};
use serde_json::{json, Value};

/// A space (resource) of `owner` with one bound key, shared with `members`.
async fn space(owner: &Client, members: &[&str]) -> (String, String) {
    let keys = owner.create_keys(1).await;
    let k = keys[0].uri.to_string();
    let r = owner.create_resource(members, std::slice::from_ref(&k)).await;
    (r.uri.to_string(), k)
}

/// A fresh key bound to `res` by `owner`.
async fn bind_new(owner: &Client, res: &str) -> String {
    let k = owner.create_keys(1).await[0].uri.to_string();
    owner.ok(Method::Update, &k, json!({"resourceUri": res})).await;
    k
}

async fn connect_as(engine: &Arc<Engine>, user: &str, client: &str) -> Result<Client, ProtocolError> {
    Client::try_connect(engine, client_info(user, client)).await
}

async fn policy_of(admin: &Client) -> (u64, Value) {
    let r = admin.ok(Method::Retrieve, "/policy", json!({})).await;
    let p = r.policy.unwrap();
    (p.version, serde_json::to_value(&p.policy).unwrap())
}

fn reason_of(e: ProtocolError) -> String {
    match e {
        ProtocolError::Status { status, reason } => format!("{} {}", status.0, reason),
        other => other.to_string(),
    }
}

#[tokio::test]
async fn the_policy_admin_api_is_for_org_admins_and_never_loses_a_change() {
    let (h, log) = harness_audited().await;
    let admin = Client::connect(&h.engine, "admin").await;
    let bob = Client::connect(&h.engine, "bob").await;

    // Not set yet: version 0, empty.
    let (v, p) = policy_of(&admin).await;
    assert_eq!((v, p), (0, json!({})));
    // Only admins read or write it.
    assert_eq!(bob.call(Method::Retrieve, "/policy", json!({})).await.status, Status::FORBIDDEN);
    let r = bob.call(Method::Update, "/policy", json!({"policy": {"admins": ["bob"]}, "policyVersion": 0})).await;
    assert_eq!(r.status, Status::FORBIDDEN);

    // An admin names a second admin and a bot; the KMS canonicalizes ids.
    let r = admin
        .ok(
            Method::Update,
            "/policy",
            json!({"policy": {"admins": ["carol"], "services": {"pollbot": {"kind": "bot", "state": "allowed"}}}, "policyVersion": 0}),
        )
        .await;
    let p = r.policy.unwrap();
    assert_eq!(p.version, 1);
    assert_eq!(p.policy.admins, vec!["carol@acme.example"]);
    assert!(p.policy.services.contains_key("pollbot@acme.example"));
    assert!(r.reason.unwrap().contains("service pollbot@acme.example added"));

    // A stale version is refused (409) and changes nothing.
    let r = admin.call(Method::Update, "/policy", json!({"policy": {}, "policyVersion": 0})).await;
    assert_eq!(r.status, Status::CONFLICT, "{:?}", r.reason);
    assert_eq!(policy_of(&admin).await.0, 1);
    // The new admin may now change policy; bob still may not.
    let carol = Client::connect(&h.engine, "carol").await;
    assert_eq!(carol.call(Method::Retrieve, "/policy", json!({})).await.status, Status::OK);

    // Bad documents: 400 with the field named, nothing changed.
    for (bad, field) in [
        (json!({"admins": ["eve@evil.example"]}), "admins"),
        (json!({"services": {"x": {"state": "allowed", "roles": ["root"]}}}), "services.roles"),
        (
            json!({"services": {"x": {"state": "allowed", "spaces": ["kms://other.example/resources/r"]}}}),
            "services.spaces",
        ),
        (json!({"approval": {"required": 2, "approvers": ["a"]}}), "approval.required"),
        (json!({"retention": {"days": 0}}), "retention.days"),
        (json!({"unknownSetting": true}), "unknown field"),
    ] {
        let r = admin.call(Method::Update, "/policy", json!({"policy": bad, "policyVersion": 1})).await;
        assert_eq!(r.status, Status::BAD_REQUEST, "{bad}");
        assert!(r.reason.as_deref().unwrap_or_default().contains(field), "{bad}: {:?}", r.reason);
    }
    let r = admin.call(Method::Update, "/policy", json!({"policy": {}})).await;
    assert_eq!(r.status, Status::BAD_REQUEST, "policyVersion is required");
    assert_eq!(policy_of(&admin).await.0, 1);

    // Two admins racing from the same version: exactly one wins.
    let a =
        admin.request(Method::Update, "/policy", json!({"policy": {"admins": ["carol", "dan"]}, "policyVersion": 1}));
    let b =
        carol.request(Method::Update, "/policy", json!({"policy": {"admins": ["carol", "erin"]}, "policyVersion": 1}));
    let (ra, rb) = tokio::join!(admin.send(&a), carol.send(&b));
    let statuses = [ra.unwrap().status, rb.unwrap().status];
    assert!(statuses.contains(&Status::OK) && statuses.contains(&Status::CONFLICT), "{statuses:?}");

    // Every change and refusal by a non-admin is in the audit log.
    let changes = log.entries(&Query { actions: vec![Action::PolicyChange], ..Query::default() }).await.unwrap();
    assert!(changes.iter().any(|e| e.actor == "admin@acme.example" && e.actor_kind == ActorKind::Admin));
    assert!(changes.iter().any(|e| e.actor == "bob@acme.example" && e.outcome == audit::Outcome::Denied));
}

#[tokio::test]
async fn a_revoked_bot_is_cut_off_on_its_very_next_request() {
    let (h, log) = harness_audited().await;
    set_policy(&h.engine, json!({"services": {"pollbot": {"kind": "bot", "state": "allowed"}}})).await;
    let alice = Client::connect(&h.engine, "alice").await;
    let bot = Client::connect(&h.engine, "pollbot").await;
    let (res, k1) = space(&alice, &["pollbot"]).await;

    // Allowed: the bot reads the space's key, creates its own, and binds it.
    assert_eq!(bot.call(Method::Retrieve, &k1, json!({})).await.status, Status::OK);
    let bk = bot.create_keys(1).await[0].uri.to_string();
    assert_eq!(bot.call(Method::Update, &bk, json!({"resourceUri": res})).await.status, Status::OK);
    let no_rekey = alice.ok(Method::Retrieve, &format!("{res}/keys"), json!({})).await;
    assert_eq!(no_rekey.rekey_after, None);

    // Revoked mid-stream.
    let before = kms::now_ms();
    set_policy(&h.engine, json!({"services": {"pollbot": {"kind": "bot", "state": "revoked"}}})).await;
    // Its next request of any kind fails, and its session is reset.
    let r = bot.call(Method::Update, "/ping", json!({})).await;
    assert_eq!((r.status, r.reason.as_deref()), (Status::FORBIDDEN, Some("the org has revoked this service")));
    let e = bot.send(&bot.request(Method::Retrieve, &k1, json!({}))).await.unwrap_err();
    assert!(matches!(e, ProtocolError::Reset(_)), "{e:?}");
    // A new session is refused at the handshake, whatever token it holds.
    let e = connect_as(&h.engine, "pollbot", "dev-pollbot").await.err().unwrap();
    assert_eq!(reason_of(e), "403 the org has revoked this service");

    // Members are told to re-key: the space's keys carry rekeyAfter >= the revocation.
    let r = alice.ok(Method::Retrieve, &format!("{res}/keys"), json!({})).await;
    let after = kms::to_ms(&r.rekey_after.expect("rekeyAfter after a revocation"));
    assert!(after >= before - 1, "{after} < {before}");
    // A space the bot never had is not affected.
    let (other, _) = space(&alice, &[]).await;
    assert_eq!(alice.ok(Method::Retrieve, &format!("{other}/keys"), json!({})).await.rekey_after, None);
    // A key bound after the revocation is newer than rekeyAfter: clients stop re-keying.
    let fresh = bind_new(&alice, &res).await;
    let r = alice.ok(Method::Retrieve, &format!("{res}/keys"), json!({"count": 1})).await;
    let newest = r.keys.unwrap().remove(0);
    assert_eq!(newest.uri.to_string(), fresh);
    assert!(kms::to_ms(&newest.bind_date.unwrap()) >= after);

    // Audited: the cut-off, and nothing released to the bot after it.
    let resets = log.entries(&Query { actions: vec![Action::SessionReset], ..Query::default() }).await.unwrap();
    assert!(resets.iter().any(|e| e.actor == "pollbot@acme.example" && e.actor_kind == ActorKind::Service));
    let reset_seq = resets[0].seq;
    let later = log
        .entries(&Query {
            actor: Some("pollbot@acme.example".into()),
            actions: vec![Action::KeyRelease],
            after_seq: reset_seq,
            ..Query::default()
        })
        .await
        .unwrap();
    assert!(later.is_empty());
}

#[tokio::test]
async fn a_revoked_bot_cannot_authorize_anyone_even_through_a_session_it_already_had() {
    let h = harness().await;
    set_policy(&h.engine, json!({"services": {"pollbot": {"kind": "bot", "state": "allowed"}}})).await;
    let alice = Client::connect(&h.engine, "alice").await;
    let bot = Client::connect(&h.engine, "pollbot").await;
    let (res, k) = space(&alice, &["pollbot"]).await;
    set_policy(&h.engine, json!({"services": {"pollbot": {"kind": "bot", "state": "revoked"}}})).await;
    let r = bot.call(Method::Create, "/authorizations", json!({"resourceUri": res, "authIds": ["mallory"]})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    let mallory = Client::connect(&h.engine, "mallory").await;
    assert_eq!(mallory.call(Method::Retrieve, &k, json!({})).await.status, Status::FORBIDDEN);
    // Re-allowed later: a new session works again (revocation is not a tombstone).
    set_policy(&h.engine, json!({"services": {"pollbot": {"kind": "bot", "state": "allowed"}}})).await;
    let bot = Client::connect(&h.engine, "pollbot").await;
    assert_eq!(bot.call(Method::Retrieve, &k, json!({})).await.status, Status::OK);
}

#[tokio::test]
async fn a_time_range_or_a_space_can_be_withdrawn_from_a_service() {
    let h = harness().await;
    set_policy(&h.engine, json!({"services": {"indexer": {"kind": "search", "state": "allowed"}}})).await;
    let alice = Client::connect(&h.engine, "alice").await;
    let bot = Client::connect(&h.engine, "indexer").await;
    let (res, k1) = space(&alice, &["indexer"]).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let t1 = kms::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let k2 = bind_new(&alice, &res).await;
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let t2 = kms::now_ms();
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let k3 = bind_new(&alice, &res).await;
    let (res_b, kb) = space(&alice, &["indexer"]).await;

    // Withdraw [t1, t2) of this space only.
    let d = |ms: i64| kms_protocol::date::format(&kms::from_ms(ms));
    set_policy(
        &h.engine,
        json!({"services": {"indexer": {"kind": "search", "state": "allowed",
            "denials": [{"space": res, "from": d(t1), "until": d(t2)}]}}}),
    )
    .await;
    assert_eq!(bot.call(Method::Retrieve, &k1, json!({})).await.status, Status::OK);
    let r = bot.call(Method::Retrieve, &k2, json!({})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    assert_eq!(r.reason.as_deref(), Some("outside the content the org allows this service to read"));
    assert_eq!(bot.call(Method::Retrieve, &k3, json!({})).await.status, Status::OK);
    assert_eq!(bot.call(Method::Retrieve, &kb, json!({})).await.status, Status::OK, "other space untouched");
    // Resource keys are filtered the same way.
    let listed: Vec<String> = bot
        .ok(Method::Retrieve, &format!("{res}/keys"), json!({}))
        .await
        .keys
        .unwrap()
        .into_iter()
        .map(|k| k.uri.to_string())
        .collect();
    assert_eq!(listed, vec![k3.clone(), k1.clone()]);
    // Members still read everything.
    assert_eq!(alice.call(Method::Retrieve, &k2, json!({})).await.status, Status::OK);

    // A content window (contentFrom) and a space list: only the listed space, only newer content.
    set_policy(
        &h.engine,
        json!({"services": {"indexer": {"kind": "search", "state": "allowed", "spaces": [res], "contentFrom": d(t2)}}}),
    )
    .await;
    assert_eq!(bot.call(Method::Retrieve, &k1, json!({})).await.status, Status::FORBIDDEN);
    assert_eq!(bot.call(Method::Retrieve, &k3, json!({})).await.status, Status::OK);
    let r = bot.call(Method::Retrieve, &format!("{res_b}/keys"), json!({})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    assert_eq!(bot.call(Method::Retrieve, &kb, json!({})).await.status, Status::FORBIDDEN);
}

#[tokio::test]
async fn an_org_agent_reads_org_spaces_without_members_and_only_in_scope() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let (r1, k1) = space(&alice, &[]).await;
    let (r2, k2) = space(&alice, &[]).await;
    let agent = Client::connect(&h.engine, "dlp").await;
    // Not a registered service yet: an ordinary user with no authorization.
    assert_eq!(agent.call(Method::Retrieve, &k1, json!({})).await.status, Status::FORBIDDEN);
    set_policy(
        &h.engine,
        json!({"services": {"dlp": {"kind": "dlp", "state": "allowed", "roles": ["orgAgent"], "spaces": [r1]}}}),
    )
    .await;
    assert_eq!(agent.call(Method::Retrieve, &k1, json!({})).await.status, Status::OK);
    assert_eq!(agent.call(Method::Retrieve, &k2, json!({})).await.status, Status::FORBIDDEN);
    let _ = r2;
    // A participant-only service needs a member's authorization.
    set_policy(&h.engine, json!({"services": {"dlp": {"kind": "dlp", "state": "allowed"}}})).await;
    assert_eq!(agent.call(Method::Retrieve, &k1, json!({})).await.status, Status::FORBIDDEN);
    // A resource created by another org's user is not the org's.
    set_policy(&h.engine, json!({"services": {"dlp": {"kind": "dlp", "state": "allowed", "roles": ["orgAgent"]}}}))
        .await;
    assert_eq!(agent.call(Method::Retrieve, &k2, json!({})).await.status, Status::OK);
}

#[tokio::test]
async fn admins_disable_a_user_or_one_device_at_once() {
    let h = harness().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let laptop = connect_as(&h.engine, "bob", "laptop").await.unwrap();
    let phone = connect_as(&h.engine, "bob", "phone").await.unwrap();
    let (res, k) = space(&alice, &["bob"]).await;
    assert_eq!(laptop.call(Method::Retrieve, &k, json!({})).await.status, Status::OK);

    set_policy(&h.engine, json!({"disabledClients": {"bob": {"laptop": {}}}})).await;
    let r = laptop.call(Method::Retrieve, &k, json!({})).await;
    assert_eq!((r.status, r.reason.as_deref()), (Status::FORBIDDEN, Some("the org has disabled this user or device")));
    assert!(matches!(
        laptop.send(&laptop.request(Method::Update, "/ping", json!({}))).await,
        Err(ProtocolError::Reset(_))
    ));
    assert!(connect_as(&h.engine, "bob", "laptop").await.is_err());
    assert_eq!(phone.call(Method::Retrieve, &k, json!({})).await.status, Status::OK, "other devices keep working");
    // Members must re-key: bob's device could read this space.
    assert!(alice.ok(Method::Retrieve, &format!("{res}/keys"), json!({})).await.rekey_after.is_some());

    set_policy(&h.engine, json!({"disabledUsers": {"bob": {}}})).await;
    assert_eq!(phone.call(Method::Retrieve, &k, json!({})).await.status, Status::FORBIDDEN);
    let e = connect_as(&h.engine, "bob", "tablet").await.err().unwrap();
    assert_eq!(reason_of(e), "403 the org has disabled this user or device");
    // Re-enabled: a new session works.
    set_policy(&h.engine, json!({})).await;
    let bob = connect_as(&h.engine, "bob", "tablet").await.unwrap();
    assert_eq!(bob.call(Method::Retrieve, &k, json!({})).await.status, Status::OK);
}

#[tokio::test]
async fn certificate_services_are_denied_unless_listed() {
    // Covered end to end (with real certificates) in service_auth.rs; here the
    // policy side: a listed certificate service id is canonical and distinct from users.
    let p: kms_protocol::policy::OrgPolicy =
        serde_json::from_value(json!({"services": {"service:Indexer@Acme.example": {"state": "allowed"}}})).unwrap();
    let p = p.canonicalize(DOMAIN, common::ORG).unwrap();
    assert!(p.services.contains_key("service:indexer@acme.example"));
    assert!(!p.services.contains_key("indexer@acme.example"));
}

fn obo(user: &str, subject: &str, client: &str) -> kms_protocol::ClientInfo {
    let mut c = client_info(user, client);
    c.credential = Credential { on_behalf_of: Some(subject.into()), ..Credential::bearer(format!("tok-{user}")) };
    c
}

#[tokio::test]
async fn compliance_officers_read_on_behalf_of_their_own_org_and_are_audited() {
    let (h, log) = harness_audited().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let (res, k) = space(&alice, &["bob"]).await;
    let (private, pk) = space(&alice, &[]).await;

    // Not an officer (an admin is not one either): refused.
    for who in ["eve", "admin"] {
        let e = Client::try_connect(&h.engine, obo(who, "bob@acme.example", "c")).await.err().unwrap();
        assert_eq!(reason_of(e), "403 onBehalfOf is allowed only for the org's compliance officers", "{who}");
    }
    set_policy(&h.engine, json!({"complianceOfficers": ["olivia"]})).await;
    // Another org's user: refused.
    let e = Client::try_connect(&h.engine, obo("olivia", "dave@globex.example", "c")).await.err().unwrap();
    assert_eq!(reason_of(e), "403 onBehalfOf must name a user of this KMS's own org");

    let officer = Client::try_connect(&h.engine, obo("olivia", "bob", "c")).await.unwrap();
    // Bob's authorizations apply: his space yes, alice's private one no.
    assert_eq!(officer.call(Method::Retrieve, &k, json!({})).await.status, Status::OK);
    assert_eq!(officer.call(Method::Retrieve, &format!("{res}/keys"), json!({})).await.status, Status::OK);
    assert_eq!(officer.call(Method::Retrieve, &pk, json!({})).await.status, Status::FORBIDDEN);
    let _ = private;
    // Read only: no authorizations, no keys.
    let r = officer.call(Method::Create, "/authorizations", json!({"resourceUri": res, "authIds": ["olivia"]})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    assert_eq!(officer.call(Method::Create, "/keys", json!({"count": 1})).await.status, Status::FORBIDDEN);
    // Without onBehalfOf, the officer is only herself.
    let herself = Client::connect(&h.engine, "olivia").await;
    assert_eq!(herself.call(Method::Retrieve, &k, json!({})).await.status, Status::FORBIDDEN);

    // Every release names the officer and the subject.
    let rel = log
        .entries(&Query {
            actor: Some("olivia@acme.example".into()),
            actions: vec![Action::KeyRelease],
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(rel.len(), 2);
    assert!(rel.iter().all(|e| e.actor_kind == ActorKind::Compliance
        && e.on_behalf_of.as_deref() == Some("bob@acme.example")
        && e.keys.contains(&k)));
    // Members see it through key-access transparency.
    let acc = alice.ok(Method::Retrieve, &format!("{res}/accesses"), json!({})).await.accesses.unwrap();
    assert!(acc
        .iter()
        .any(|a| a.actor == "olivia@acme.example" && a.on_behalf_of.as_deref() == Some("bob@acme.example")));
}

#[tokio::test]
async fn m_of_n_approval_releases_only_after_enough_approvers() {
    let (h, log) = harness_audited().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let (res, k) = space(&alice, &["bob"]).await;
    let (other, ok2) = space(&alice, &["bob"]).await;
    let _ = other;
    set_policy(
        &h.engine,
        json!({"complianceOfficers": ["olivia"], "approval": {"required": 2, "approvers": ["ann", "art", "olivia", "ava"]}}),
    )
    .await;
    let olivia = Client::connect(&h.engine, "olivia").await;
    let officer = Client::try_connect(&h.engine, obo("olivia", "bob", "c")).await.unwrap();
    let with_case = |case: &str| json!({"caseId": case});

    // No case: refused.
    let r = officer.call(Method::Retrieve, &k, json!({})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    assert!(r.reason.unwrap().contains("approved compliance case"));
    // Only officers open cases.
    let ann = Client::connect(&h.engine, "ann").await;
    let r = ann.call(Method::Create, "/cases", json!({"case": {"spaces": [res]}})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    let bad = olivia.call(Method::Create, "/cases", json!({"case": {"spaces": []}})).await;
    assert_eq!(bad.status, Status::BAD_REQUEST);
    let case = olivia
        .ok(Method::Create, "/cases", json!({"case": {"spaces": [res], "reason": "matter 2026-17"}}))
        .await
        .case
        .unwrap();
    let cid = case.uri.to_string();
    assert_eq!((case.state, case.required), (kms_protocol::policy::CaseState::Pending, 2));
    assert_eq!(officer.call(Method::Retrieve, &k, with_case(&cid)).await.status, Status::FORBIDDEN, "pending");

    // The officer may not approve her own case; a non-approver may not approve.
    let r = olivia.call(Method::Update, &cid, json!({"decision": "approve"})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    let eve = Client::connect(&h.engine, "eve").await;
    assert_eq!(eve.call(Method::Update, &cid, json!({"decision": "approve"})).await.status, Status::FORBIDDEN);
    // One approval (twice) is still one.
    ann.ok(Method::Update, &cid, json!({"decision": "approve"})).await;
    let c = ann.ok(Method::Update, &cid, json!({"decision": "approve"})).await.case.unwrap();
    assert_eq!((c.state, c.approvals.len()), (kms_protocol::policy::CaseState::Pending, 1));
    assert_eq!(officer.call(Method::Retrieve, &k, with_case(&cid)).await.status, Status::FORBIDDEN);
    // The second approver: released, for the case's space only.
    let art = Client::connect(&h.engine, "art").await;
    let c = art.ok(Method::Update, &cid, json!({"decision": "approve"})).await.case.unwrap();
    assert_eq!(c.state, kms_protocol::policy::CaseState::Approved);
    assert_eq!(officer.call(Method::Retrieve, &k, with_case(&cid)).await.status, Status::OK);
    let r = officer.call(Method::Retrieve, &ok2, with_case(&cid)).await;
    assert_eq!((r.status, r.reason.as_deref()), (Status::FORBIDDEN, Some("outside what this compliance case covers")));
    // Another officer cannot ride on olivia's case.
    set_policy(
        &h.engine,
        json!({"complianceOfficers": ["olivia", "oscar"], "approval": {"required": 2, "approvers": ["ann", "art", "olivia", "ava"]}}),
    )
    .await;
    let oscar = Client::try_connect(&h.engine, obo("oscar", "bob", "c")).await.unwrap();
    assert_eq!(oscar.call(Method::Retrieve, &k, with_case(&cid)).await.status, Status::FORBIDDEN);
    // Closed: nothing more.
    olivia.ok(Method::Update, &cid, json!({"decision": "close"})).await;
    assert_eq!(officer.call(Method::Retrieve, &k, with_case(&cid)).await.status, Status::FORBIDDEN);
    assert_eq!(officer.call(Method::Retrieve, &k, with_case("no-such-case")).await.status, Status::FORBIDDEN);
    let r = officer.call(Method::Retrieve, &k, with_case("kms://other.example/cases/x")).await;
    assert_eq!(r.status, Status::BAD_REQUEST);

    // The release is audited with the case.
    let rel = log
        .entries(&Query {
            actions: vec![Action::KeyRelease],
            actor_kinds: vec![ActorKind::Compliance],
            ..Query::default()
        })
        .await
        .unwrap();
    assert_eq!(rel.len(), 1);
    assert_eq!(rel[0].case.as_deref(), Some(cid.as_str()));
    // Parties list cases; others may not.
    assert_eq!(ann.ok(Method::Retrieve, "/cases", json!({})).await.cases.unwrap().len(), 1);
    assert_eq!(eve.call(Method::Retrieve, "/cases", json!({})).await.status, Status::FORBIDDEN);
}

#[tokio::test]
async fn a_service_with_a_token_is_denied_unless_listed_and_never_an_admin() {
    let (h, log) = harness_audited().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let (res, k) = space(&alice, &["indexer"]).await;
    // Client-credentials tokens (`svc-` in the fake issuer): refused until the org lists them,
    // whatever authorizations members gave.
    let e = Client::try_connect(&h.engine, client_info("svc-indexer", "c")).await.err().unwrap();
    assert_eq!(reason_of(e), "403 this service is not allowed by the org's policy");
    set_policy(&h.engine, json!({"services": {"indexer": {"kind": "search", "state": "allowed"}}})).await;
    let svc = Client::try_connect(&h.engine, client_info("svc-indexer", "c")).await.unwrap();
    assert_eq!(svc.call(Method::Retrieve, &k, json!({})).await.status, Status::OK);
    // Listed in key-access transparency as a service.
    let acc = alice.ok(Method::Retrieve, &format!("{res}/accesses"), json!({})).await.accesses.unwrap();
    assert!(acc.iter().any(|a| a.actor == "indexer@acme.example" && a.actor_kind == "service"), "{acc:?}");
    // A service token whose subject is an admin's id is still no admin.
    set_policy(&h.engine, json!({"services": {"admin": {"kind": "other", "state": "allowed"}}})).await;
    let fake_admin = Client::try_connect(&h.engine, client_info("svc-admin", "c")).await.unwrap();
    assert_eq!(fake_admin.call(Method::Retrieve, "/policy", json!({})).await.status, Status::FORBIDDEN);
    drop(log);
}
