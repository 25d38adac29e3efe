//! The SDK's compliance reader against real servers in-process (a
//! development IdP, a KMS, a core): what an officer reads equals what a
//! member reads, and every refusal comes back as a typed error with the
//! KMS's reason.

use std::sync::Arc;

use client::tokens::{OidcTokens, TokenSource};
use client::{ComplianceReader, Content, Error, KmsPin, Session, SessionConfig};
use kms_protocol::message::{Method, RequestBody};
use serde_json::json;

const CORE_AUD: &str = "https://core.compliance.test";
const KMS_AUD: &str = "kms://kms.acme.test";

struct World {
    _tmp: tempfile::TempDir,
    idp: idp::Running,
    _kms: kms::server::Running,
    core: custos_core::server::Running,
    pin: KmsPin,
}

impl World {
    async fn start() -> World {
        let tmp = tempfile::tempdir().unwrap();
        let mut users = String::new();
        for u in ["alice", "bob", "carol", "mallory"] {
            users.push_str(&format!("[[users]]\nid = \"{u}@acme.test\"\npassword = \"{u}-pw\"\n"));
        }
        let idp_cfg = idp::Config::from_toml(&format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = {:?}\naudiences = [{CORE_AUD:?}, {KMS_AUD:?}]\n{users}",
            tmp.path().join("idp").display().to_string()
        ))
        .unwrap();
        let idp = idp::start(idp_cfg).await.unwrap();
        std::env::set_var("SDK_COMPLIANCE_TEST_CMK", "a passphrase for the sdk compliance tests");
        let kms_text = format!(
            "listen = \"127.0.0.1:0\"\ndomain = \"kms.acme.test\"\norg_domain = \"acme.test\"\ndata_dir = \"kms\"\nadmins = [\"alice@acme.test\"]\n[cmk]\npassphrase_env = \"SDK_COMPLIANCE_TEST_CMK\"\n[identity]\naudience = {KMS_AUD:?}\n[[identity.issuers]]\nissuer = {:?}\norg_domain = \"acme.test\"\n",
            idp.issuer
        );
        let kcfg = kms::config::Config::parse(&kms_text, tmp.path()).unwrap();
        let kms = kms::server::start(&kcfg, false).await.unwrap();
        let core_text = format!(
            "listen = \"127.0.0.1:0\"\ndata_dir = \"core\"\n[identity]\naudience = {CORE_AUD:?}\n[[identity.issuers]]\nissuer = {:?}\norg_domain = \"acme.test\"\n[[orgs]]\ndomain = \"acme.test\"\nkms_uri = \"kms://kms.acme.test\"\nkms_url = \"http://{}\"\ncompliance_readers = [\"carol@acme.test\"]\n",
            idp.issuer, kms.addr
        );
        let core = custos_core::server::start(custos_core::config::Config::parse(&core_text, tmp.path()).unwrap())
            .await
            .unwrap();
        let pin = KmsPin::new("kms.acme.test", kms.engine.server_key().public_key().clone()).unwrap();
        World { _tmp: tmp, idp, _kms: kms, core, pin }
    }

    async fn tokens(&self, user: &str) -> Arc<dyn TokenSource> {
        let endpoint = format!("{}/token", self.idp.issuer);
        let pw = format!("{}-pw", user.split('@').next().unwrap());
        let v: serde_json::Value = reqwest::Client::new()
            .post(&endpoint)
            .form(&[
                ("grant_type", "password"),
                ("username", user),
                ("password", pw.as_str()),
                ("client_id", "custos-cli"),
                ("audience", CORE_AUD),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let refresh = v["refresh_token"].as_str().unwrap_or_else(|| panic!("login {user}: {v}"));
        Arc::new(OidcTokens::from_refresh_token(&endpoint, "custos-cli", refresh, None))
    }

    fn config(&self) -> SessionConfig {
        SessionConfig::new(&format!("http://{}", self.core.addr), CORE_AUD, self.pin.clone(), KMS_AUD)
    }

    async fn session(&self, user: &str) -> Session {
        Session::open(self.config(), self.tokens(user).await).await.unwrap()
    }

    async fn reader(&self, user: &str) -> ComplianceReader {
        ComplianceReader::open(self.config(), self.tokens(user).await).await.unwrap()
    }
}

async fn set_policy(admin: &Session, policy: serde_json::Value) {
    let current = admin.kms().call(Method::Retrieve, "/policy", RequestBody::default()).await.unwrap();
    let version = current.policy.map(|p| p.version).unwrap_or(0);
    let body = RequestBody { policy: Some(policy), policy_version: Some(version), ..RequestBody::default() };
    admin.kms().call(Method::Update, "/policy", body).await.unwrap();
}

fn reason(e: Error) -> String {
    match e {
        Error::NotAuthorized { reason } => reason,
        other => panic!("expected NotAuthorized, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_officer_reads_what_members_read_and_refusals_are_typed() {
    let w = World::start().await;
    let alice = w.session("alice@acme.test").await;
    let bob = w.session("bob@acme.test").await;
    let space = alice.create_space("Matter", &["bob@acme.test".into()]).await.unwrap();
    let m = alice.send(&space.id, "hello").await.unwrap();
    bob.reply(&space.id, &m.id, "hi alice").await.unwrap();
    bob.react(&space.id, &m.id, "👍").await.unwrap();
    alice.edit(&space.id, &m.id, "hello, edited").await.unwrap();
    let gone = alice.send(&space.id, "oops").await.unwrap();
    alice.delete(&space.id, &gone.id).await.unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("a.txt");
    std::fs::write(&src, b"payload").unwrap();
    let f = alice.upload(&space.id, &src, &|_, _| {}).await.unwrap();
    let members_view = bob.history(&space.id, None, 100).await.unwrap();

    // The core lets carol read; mallory (not a reader) is told there is no such space.
    let mallory = w.reader("mallory@acme.test").await;
    let e = mallory.space_record(&space.id).await.unwrap_err();
    assert!(matches!(e, Error::Core { status: 404, .. }), "{e:?}");
    let mut carol = w.reader("carol@acme.test").await;
    assert_eq!(carol.officer(), "carol@acme.test");
    let record = carol.space_record(&space.id).await.unwrap();
    assert_eq!(carol.default_subject(&record).as_deref(), Some("alice@acme.test"));

    // Not an officer yet: the KMS refuses onBehalfOf, typed, with its reason.
    let e = carol.act_for("bob@acme.test", None).await.unwrap_err();
    assert!(e.is_not_authorized(), "{e:?}");
    assert!(reason(e).contains("onBehalfOf"));
    assert_eq!(carol.subject(), None, "a refused act_for changes nothing");
    // Without onBehalfOf, carol is only herself: not authorized on the space.
    assert!(carol.verify_space(&record).await.unwrap_err().is_not_authorized());

    set_policy(&alice, json!({"complianceOfficers": ["carol@acme.test"]})).await;
    assert!(reason(carol.act_for("dave@globex.test", None).await.unwrap_err()).contains("onBehalfOf"));
    carol.act_for("bob@acme.test", None).await.unwrap();
    assert_eq!(carol.subject(), Some("bob@acme.test"));
    let s = carol.verify_space(&record).await.unwrap();
    assert_eq!((s.title.as_str(), &s.resource), ("Matter", &space.resource));
    let read = carol.messages(&s, None, None).await.unwrap();
    assert_eq!(read, members_view, "exactly what a member reads");
    assert!(read.iter().all(|m| !matches!(m.content, Content::Unreadable(_))));
    assert!(carol.messages(&s, Some(i64::MAX - 1), None).await.unwrap().is_empty());
    assert!(carol.messages(&s, None, Some(0)).await.unwrap().is_empty());
    let info = carol.file_info(&s, &f.id).await.unwrap();
    assert_eq!((info.name.as_str(), info.size), ("a.txt", 7));
    let dst = tmp.path().join("b.txt");
    carol.download(&s, &f.id, &dst, &|_, _| {}).await.unwrap();
    assert_eq!(std::fs::read(&dst).unwrap(), b"payload");
    assert!(matches!(carol.download(&s, &f.id, &dst, &|_, _| {}).await, Err(Error::Invalid(_))), "never replaced");
    // Read only at the KMS too.
    let e = carol.kms().create_keys(1).await.unwrap_err();
    assert!(e.is_not_authorized(), "{e:?}");

    // Approval required: no case, then a pending case, refused; approved, released.
    set_policy(
        &alice,
        json!({"complianceOfficers": ["carol@acme.test"], "approval": {"required": 1, "approvers": ["bob@acme.test"]}}),
    )
    .await;
    carol.act_for("bob@acme.test", None).await.unwrap();
    let r = reason(carol.verify_space(&record).await.unwrap_err());
    assert!(r.contains("approved compliance case") && r.contains("caseId"), "{r}");
    let officer = w.session("carol@acme.test").await;
    let body = RequestBody {
        case: Some(kms_protocol::policy::CaseRequest {
            spaces: vec![space.resource.to_string()],
            from: None,
            until: None,
            reason: Some("matter 1".into()),
        }),
        ..RequestBody::default()
    };
    let case = officer.kms().call(Method::Create, "/cases", body).await.unwrap().case.unwrap().uri.to_string();
    carol.act_for("bob@acme.test", Some(&case)).await.unwrap();
    assert_eq!(carol.case_id(), Some(case.as_str()));
    assert!(reason(carol.verify_space(&record).await.unwrap_err()).contains("not approved"));
    let decision =
        RequestBody { decision: Some(kms_protocol::policy::CaseDecision::Approve), ..RequestBody::default() };
    bob.kms().call(Method::Update, &case, decision).await.unwrap();
    let s = carol.verify_space(&record).await.unwrap();
    assert_eq!(carol.messages(&s, None, None).await.unwrap(), members_view);
    // Members see who read their space's keys, on whose behalf, under which case.
    let acc = alice.key_accesses(&space.id).await.unwrap();
    assert!(acc.iter().any(|a| a.actor == "carol@acme.test"
        && a.on_behalf_of.as_deref() == Some("bob@acme.test")
        && a.case.as_deref() == Some(case.as_str())));
}
