//! The KMS's one authorization rule, as a table (principal × operation →
//! status), and the behaviours built on it: removal takes what the removed
//! member set up, `explain` says why, releases record how they were granted,
//! compliance cases answer to the approval rule in force, and a request that
//! decrypts but cannot be read still gets its requestId back.
//!
//! Peer KMSs are left out of the table: they need certificates and a second
//! engine, and `federation.rs` drives them (reads only, own users only).

mod common;

use common::{client_info, harness_audited, set_policy, Client, DOMAIN, ORG};
use kms_protocol::{ClientInfo, Credential, Method, ProtocolError, Status};
use serde_json::{json, Value};

fn reason_of(e: ProtocolError) -> String {
    match e {
        ProtocolError::Status { status, reason } => format!("{} {}", status.0, reason),
        other => other.to_string(),
    }
}

fn obo(user: &str, subject: &str) -> ClientInfo {
    let mut c = client_info(user, "officer-laptop");
    c.credential = Credential { on_behalf_of: Some(subject.into()), ..Credential::bearer(format!("tok-{user}")) };
    c
}

fn bearer_info(bearer: &str) -> ClientInfo {
    ClientInfo { client_id: "link".into(), credential: Credential::bearer(bearer.to_string()) }
}

/// A resource of `owner` with one fresh key bound, shared with `members`.
async fn space(owner: &Client, members: &[&str]) -> (String, String) {
    let k = owner.create_keys(1).await[0].uri.to_string();
    let r = owner.create_resource(members, std::slice::from_ref(&k)).await;
    (r.uri.to_string(), k)
}

async fn bind_new(owner: &Client, res: &str) -> String {
    let k = owner.create_keys(1).await[0].uri.to_string();
    owner.ok(Method::Update, &k, json!({"resourceUri": res})).await;
    k
}

fn enc(s: &str) -> String {
    s.replace('@', "%40")
}

#[tokio::test]
async fn the_rule_as_a_table() {
    let (h, _log) = harness_audited().await;
    let e = &h.engine;
    let alice = Client::connect(e, "alice").await;
    let members = ["bob", "rita", "indexer", "outbot", "revokedbot", "dana", "erin"];
    let (v, k) = space(&alice, &members).await;
    let (other, _) = space(&alice, &[]).await;
    // grace reads V only through G, a resource authorized on V.
    let g = alice.create_resource(&["grace"], &[]).await.uri.to_string();
    alice.ok(Method::Create, "/authorizations", json!({"resourceUri": v, "authIds": [g]})).await;
    // rita was a member and is removed.
    alice.ok(Method::Delete, &format!("{v}/authorizations?authId=rita%40{ORG}"), json!({})).await;
    // An anonymous link to V.
    let anon = alice.ok(Method::Create, "/authorizations", json!({"resourceUri": v, "anonymous": 1})).await;
    let bearer = anon.authorizations.unwrap()[0].bearer.as_ref().unwrap().expose().to_string();
    // Cut-offs are applied after the sessions exist (on the next request) and at every new handshake.
    set_policy(e, json!({"services": {"revokedbot": {"kind": "bot", "state": "allowed"}}})).await;
    let revokedbot = Client::connect(e, "svc-revokedbot").await;
    let dana = Client::connect(e, "dana").await;
    let erin_stolen = Client::try_connect(e, client_info("erin", "stolen")).await.unwrap();
    set_policy(
        e,
        json!({
            "services": {
                "indexer": {"kind": "search", "state": "allowed", "spaces": [v]},
                "outbot": {"kind": "bot", "state": "allowed", "spaces": [other]},
                "revokedbot": {"kind": "bot", "state": "revoked"},
            },
            "complianceOfficers": ["olivia"],
            "approval": {"required": 1, "approvers": ["ann"]},
            "disabledUsers": {"dana": {}},
            "disabledClients": {"erin": {"stolen": {}}},
        }),
    )
    .await;
    let olivia = Client::connect(e, "olivia").await;
    let case = olivia.ok(Method::Create, "/cases", json!({"case": {"spaces": [v]}})).await.case.unwrap();
    let ann = Client::connect(e, "ann").await;
    ann.ok(Method::Update, &case.uri.to_string(), json!({"decision": "approve"})).await;
    let case_id = case.uri.to_string();

    let ops: Vec<(&str, Method, String, Value)> = vec![
        ("retrieve key", Method::Retrieve, k.clone(), json!({})),
        ("resource keys", Method::Retrieve, format!("{v}/keys"), json!({})),
        ("resource", Method::Retrieve, v.clone(), json!({})),
        ("authorizations", Method::Retrieve, format!("{v}/authorizations"), json!({})),
        ("authorize", Method::Create, "/authorizations".into(), json!({"resourceUri": v, "authIds": ["zed"]})),
        ("deauthorize", Method::Delete, format!("{v}/authorizations?authId=nobody%40{ORG}"), json!({})),
        ("explain", Method::Retrieve, format!("{v}/explain?authId={}", enc(&format!("bob@{ORG}"))), json!({})),
        ("accesses", Method::Retrieve, format!("{v}/accesses"), json!({})),
        ("policy", Method::Retrieve, "/policy".into(), json!({})),
        ("create keys", Method::Create, "/keys".into(), json!({"count": 1})),
    ];
    // principal, how it connects, expected status per operation (in `ops` order).
    let member = [200, 200, 200, 200, 201, 404, 200, 200, 403, 201];
    let nothing_but_keys = [403, 403, 403, 403, 403, 403, 403, 403, 403, 201];
    let table: Vec<(&str, ClientInfo, Option<&str>, [u16; 10])> = vec![
        ("member", client_info("bob", "laptop"), None, member),
        ("removed member", client_info("rita", "laptop"), None, nothing_but_keys),
        ("member through a resource", client_info("grace", "laptop"), None, member),
        ("anonymous bearer", bearer_info(&bearer), None, [200, 200, 200, 403, 403, 403, 403, 403, 403, 403]),
        (
            "officer with an approved case",
            obo("olivia", "bob"),
            Some(case_id.as_str()),
            [200, 200, 200, 200, 403, 403, 403, 403, 403, 403],
        ),
        ("officer without a case", obo("olivia", "bob"), None, [403; 10]),
        ("service allowed", client_info("svc-indexer", "box"), None, member),
        ("service out of scope", client_info("svc-outbot", "box"), None, nothing_but_keys),
        ("member on another device", client_info("erin", "laptop"), None, member),
        ("org admin", client_info("admin", "console"), None, [403, 403, 403, 403, 403, 403, 200, 200, 200, 201]),
        ("outsider", client_info("mallory", "laptop"), None, nothing_but_keys),
    ];
    let mut problems = Vec::new();
    for (who, info, case, expected) in table {
        let c = Client::try_connect(e, info).await.unwrap_or_else(|err| panic!("{who} connects: {err}"));
        for ((name, method, uri, body), want) in ops.iter().zip(expected) {
            let mut body = body.clone();
            if let Some(cid) = case {
                body["caseId"] = json!(cid);
            }
            let r = c.call(*method, uri, body).await;
            if r.status.0 != want {
                problems.push(format!("{who} / {name}: {} {:?}, want {want}", r.status.0, r.reason));
            }
        }
    }
    assert!(problems.is_empty(), "the rule disagrees with the table:\n{}", problems.join("\n"));

    // Cut off: the next request of an open session, and every new handshake.
    for (who, c, info) in [
        ("revoked service", revokedbot, client_info("svc-revokedbot", "box")),
        ("disabled user", dana, client_info("dana", "laptop")),
        ("disabled device", erin_stolen, client_info("erin", "stolen")),
    ] {
        let r = c.call(Method::Retrieve, &k, json!({})).await;
        assert_eq!(r.status, Status::FORBIDDEN, "{who}: {:?}", r.reason);
        let e2 = Client::try_connect(e, info).await.err().unwrap_or_else(|| panic!("{who} handshakes"));
        assert!(reason_of(e2).starts_with("403 "), "{who}");
    }
}

#[tokio::test]
async fn removal_takes_everything_the_removed_member_set_up_and_nothing_of_the_others() {
    let (h, _log) = harness_audited().await;
    let e = &h.engine;
    let alice = Client::connect(e, "alice").await;
    let carol = Client::connect(e, "carol").await;
    let (v, _) = space(&alice, &["carol"]).await;
    // While a member, carol sets up ways back in: her own resource M (with a
    // second account carol2 in it), an anonymous link, and a colleague (bob).
    let m = carol.create_resource(&["carol2"], &[]).await.uri.to_string();
    carol.ok(Method::Create, "/authorizations", json!({"resourceUri": v, "authIds": [m]})).await;
    let link = carol.ok(Method::Create, "/authorizations", json!({"resourceUri": v, "anonymous": 1})).await;
    let bearer = link.authorizations.unwrap()[0].bearer.as_ref().unwrap().expose().to_string();
    carol.ok(Method::Create, "/authorizations", json!({"resourceUri": v, "authIds": ["bob"]})).await;
    // carol2, who is there only through M, makes a link of her own.
    let carol2 = Client::connect(e, "carol2").await;
    let link2 = carol2.ok(Method::Create, "/authorizations", json!({"resourceUri": v, "anonymous": 1})).await;
    let bearer2 = link2.authorizations.unwrap()[0].bearer.as_ref().unwrap().expose().to_string();
    let explain = |who: &str| format!("{v}/explain?authId={}", enc(who));
    let via = alice.ok(Method::Retrieve, &explain(&format!("carol2@{ORG}")), json!({})).await.access.unwrap();
    assert_eq!((via.authorized, via.via.as_deref()), (true, Some(format!("resource {m}").as_str())));

    // alice removes carol the way node-kms and the SDK both do.
    let gone = alice.ok(Method::Delete, &format!("{v}/authorizations?authId=carol%40{ORG}"), json!({})).await;
    let gone: Vec<Option<String>> = gone.authorizations.unwrap().into_iter().map(|a| a.auth_id).collect();
    assert_eq!(gone.len(), 4, "carol, M, and both links: {gone:?}");
    assert!(gone.contains(&Some(format!("carol@{ORG}"))) && gone.contains(&Some(m.clone())));
    assert_eq!(gone.iter().filter(|a| a.is_none()).count(), 2, "both anonymous links");

    let fresh = bind_new(&alice, &v).await;
    assert_eq!(carol.call(Method::Retrieve, &fresh, json!({})).await.status, Status::FORBIDDEN, "carol");
    assert_eq!(carol2.call(Method::Retrieve, &fresh, json!({})).await.status, Status::FORBIDDEN, "through M");
    for b in [&bearer, &bearer2] {
        let err = Client::try_connect(e, bearer_info(b)).await.err().expect("a dead link does not handshake");
        assert!(reason_of(err).starts_with("401 "));
    }
    // The colleague carol added stays: the member list shows bob.
    let bob = Client::connect(e, "bob").await;
    assert_eq!(bob.call(Method::Retrieve, &fresh, json!({})).await.status, Status::OK);

    let no = alice.ok(Method::Retrieve, &explain(&format!("carol@{ORG}")), json!({})).await.access.unwrap();
    assert!(!no.authorized && no.via.is_none() && no.reason.is_some(), "{no:?}");
    let yes = alice.ok(Method::Retrieve, &explain(&format!("bob@{ORG}")), json!({})).await.access.unwrap();
    assert_eq!((yes.authorized, yes.via.as_deref()), (true, Some("member")));
    // carol may no longer ask anything about V.
    assert_eq!(
        carol.call(Method::Retrieve, &explain(&format!("bob@{ORG}")), json!({})).await.status,
        Status::FORBIDDEN
    );
    // A refusal changes nothing: a stranger's delete leaves bob in place.
    let mallory = Client::connect(e, "mallory").await;
    let r = mallory.call(Method::Delete, &format!("{v}/authorizations?authId=bob%40{ORG}"), json!({})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    assert_eq!(bob.call(Method::Retrieve, &fresh, json!({})).await.status, Status::OK);
}

#[tokio::test]
async fn releases_record_how_they_were_granted_and_transparency_shows_users_too() {
    let (h, _log) = harness_audited().await;
    let e = &h.engine;
    let alice = Client::connect(e, "alice").await;
    let (v, k) = space(&alice, &["bob"]).await;
    let g = alice.create_resource(&["grace"], &[]).await.uri.to_string();
    alice.ok(Method::Create, "/authorizations", json!({"resourceUri": v, "authIds": [g]})).await;
    // carol authorized at the KMS only (no member list shows her): her read must be visible.
    alice.ok(Method::Create, "/authorizations", json!({"resourceUri": v, "authIds": ["carol"]})).await;
    for u in ["bob", "grace", "carol"] {
        Client::connect(e, u).await.ok(Method::Retrieve, &k, json!({})).await;
    }
    let acc = alice.ok(Method::Retrieve, &format!("{v}/accesses"), json!({})).await.accesses.unwrap();
    let via = |actor: &str| {
        acc.iter()
            .find(|a| a.actor == format!("{actor}@{ORG}") && a.action == "key_release")
            .and_then(|a| a.via.clone())
    };
    assert_eq!(via("bob").as_deref(), Some("member"));
    assert_eq!(via("carol").as_deref(), Some("member"));
    assert_eq!(via("grace"), Some(format!("resource {g}")));
    assert!(acc.iter().all(|a| a.key_uris.iter().all(|u| u.starts_with("kms://"))));
    let _ = DOMAIN;
}

#[tokio::test]
async fn a_case_approved_under_a_weaker_rule_does_not_release_under_a_stricter_one() {
    let (h, _log) = harness_audited().await;
    let e = &h.engine;
    let alice = Client::connect(e, "alice").await;
    let (v, k) = space(&alice, &["bob"]).await;
    set_policy(e, json!({"complianceOfficers": ["olivia"]})).await;
    let olivia = Client::connect(e, "olivia").await;
    // No approval rule: the case is approved at once.
    let case = olivia.ok(Method::Create, "/cases", json!({"case": {"spaces": [v]}})).await.case.unwrap();
    assert_eq!(case.state, kms_protocol::policy::CaseState::Approved);
    let cid = case.uri.to_string();
    let officer = Client::try_connect(e, obo("olivia", "bob")).await.unwrap();
    assert_eq!(officer.call(Method::Retrieve, &k, json!({"caseId": cid})).await.status, Status::OK);

    // The org now requires two approvers: the old case stops releasing until they approve.
    set_policy(e, json!({"complianceOfficers": ["olivia"], "approval": {"required": 2, "approvers": ["ann", "art"]}}))
        .await;
    let r = officer.call(Method::Retrieve, &k, json!({"caseId": cid})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    assert!(r.reason.as_deref().unwrap().contains("now requires 2"), "{:?}", r.reason);
    let r = officer.call(Method::Retrieve, &format!("{v}/keys"), json!({"caseId": cid})).await;
    assert_eq!(r.status, Status::FORBIDDEN, "resource keys too");
    Client::connect(e, "ann").await.ok(Method::Update, &cid, json!({"decision": "approve"})).await;
    assert_eq!(officer.call(Method::Retrieve, &k, json!({"caseId": cid})).await.status, Status::FORBIDDEN, "1 of 2");
    Client::connect(e, "art").await.ok(Method::Update, &cid, json!({"decision": "approve"})).await;
    assert_eq!(officer.call(Method::Retrieve, &k, json!({"caseId": cid})).await.status, Status::OK, "2 of 2");
    // An approver who leaves the rule stops counting.
    set_policy(e, json!({"complianceOfficers": ["olivia"], "approval": {"required": 2, "approvers": ["ann", "ava"]}}))
        .await;
    assert_eq!(officer.call(Method::Retrieve, &k, json!({"caseId": cid})).await.status, Status::FORBIDDEN);
}

#[tokio::test]
async fn a_request_that_decrypts_but_cannot_be_read_gets_its_request_id_back() {
    let (h, _log) = harness_audited().await;
    let alice = Client::connect(&h.engine, "alice").await;
    let seal = |json: &Value| {
        jose::jwe::encrypt(
            jose::jwe::EncryptKey::Dir(alice.session.shared_key()),
            jose::ContentEnc::A256Gcm,
            &jose::HeaderParams::kid(alice.session.uri().to_string()),
            json.to_string().as_bytes(),
        )
        .unwrap()
    };
    let client = serde_json::to_value(&alice.info).unwrap();
    for (what, body) in [
        ("unknown method", json!({"client": client, "method": "frobnicate", "uri": "/keys", "requestId": "r-1"})),
        (
            "wrong type",
            json!({"client": client, "method": "create", "uri": "/keys", "count": "three", "requestId": "r-2"}),
        ),
        ("uri not a string", json!({"client": client, "method": "retrieve", "uri": 7, "requestId": "r-3"})),
    ] {
        let rid = body["requestId"].as_str().unwrap().to_string();
        let answer = h.engine.handle(&seal(&body), None).await.unwrap();
        // `unwrap` insists the answer carries this requestId.
        let r = alice.session.unwrap(&alice.kms, &answer, &rid).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(r.status, Status::BAD_REQUEST, "{what}: {:?}", r.reason);
    }
    // The session is still good afterwards (no reset).
    alice.ok(Method::Update, "/ping", json!({})).await;
}

#[tokio::test]
async fn links_explanations_and_subjects_are_kept_to_those_entitled() {
    let (h, _log) = harness_audited().await;
    let e = &h.engine;
    let alice = Client::connect(e, "alice").await;
    let (v, _) = space(&alice, &["bob", "dana"]).await;
    // Linking a resource one is not authorized on (to extend it, or to probe
    // its members through `explain`) is refused, and changes nothing.
    let mallory = Client::connect(e, "mallory").await;
    let r = mallory.call(Method::Create, "/resources", json!({"authIds": [v]})).await;
    assert_eq!(r.status, Status::FORBIDDEN, "{:?}", r.reason);
    let (m, _) = space(&mallory, &[]).await;
    let r = mallory.call(Method::Create, "/authorizations", json!({"resourceUri": m, "authIds": [v]})).await;
    assert_eq!(r.status, Status::FORBIDDEN);
    let listed = mallory.ok(Method::Retrieve, &format!("{m}/authorizations"), json!({})).await.authorizations.unwrap();
    assert_eq!(listed.len(), 1, "only mallory herself");

    // What the policy says about someone is for admins; a member learns only "no".
    set_policy(e, json!({"disabledUsers": {"dana": {}}})).await;
    let ask = format!("{v}/explain?authId={}", enc(&format!("dana@{ORG}")));
    let bob = Client::connect(e, "bob").await;
    let to_member = bob.ok(Method::Retrieve, &ask, json!({})).await.access.unwrap();
    assert!(!to_member.authorized);
    assert!(!to_member.reason.as_deref().unwrap().contains("disabled"), "{to_member:?}");
    let admin = Client::connect(e, "admin").await;
    let to_admin = admin.ok(Method::Retrieve, &ask, json!({})).await.access.unwrap();
    assert!(to_admin.reason.as_deref().unwrap().contains("disabled"), "{to_admin:?}");

    // A compliance officer acts for users only, never for a service or a KMS.
    set_policy(e, json!({"complianceOfficers": ["olivia"]})).await;
    for subject in [format!("service:indexer@{ORG}"), "kms://kms.acme.example".to_string()] {
        let err = Client::try_connect(e, obo("olivia", &subject)).await.err().expect("refused");
        assert!(reason_of(err).starts_with("403 "), "{subject}");
    }
}
