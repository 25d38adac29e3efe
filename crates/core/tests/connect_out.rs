//! A KMS behind a firewall connects out to the core and serves its users
//! through it: the link is accepted only with a `kms-connect` proof by the
//! org's configured KMS key, clients still pin the KMS key themselves, and
//! the link comes back by itself after the core restarts.

#[path = "../../kms/tests/common/server.rs"]
#[allow(dead_code)]
mod kms_server;

use std::time::{Duration, Instant};

use kms_protocol::{begin_handshake, ClientInfo, Credential, KmsInfo, Method, Request, Status};
use testkit::Idp;

const CORE_AUD: &str = "https://core.acme.example";

fn core_config(
    dir: &std::path::Path,
    issuer: &str,
    port: u16,
    kms_pub: &std::path::Path,
) -> custos_core::config::Config {
    let text = format!(
        "listen = \"127.0.0.1:{port}\"\ndata_dir = \"{}\"\n[identity]\naudience = \"{CORE_AUD}\"\n[[identity.issuers]]\nissuer = \"{issuer}\"\norg_domain = \"acme.example\"\n\
         [[orgs]]\ndomain = \"acme.example\"\nkms_uri = \"kms://kms.acme.example\"\nkms_key = \"{}\"\n",
        dir.display(),
        kms_pub.display()
    );
    custos_core::config::Config::parse(&text, dir).unwrap()
}

fn kms_config(dir: &std::path::Path, issuer: &str, key: &std::path::Path, core_port: u16) -> String {
    kms_server::config_text(
        dir,
        issuer,
        &format!(
            "connect_to = [\"ws://127.0.0.1:{core_port}/kms/connect\"]\n[static_key]\npath = \"{}\"\n",
            key.display()
        ),
    )
}

/// A core on a runtime of its own, so that stopping it closes every connection, as a process exit would.
struct CoreNode {
    links: std::sync::Arc<custos_core::relay::Links>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl CoreNode {
    fn start(cfg: custos_core::config::Config) -> CoreNode {
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                let r = custos_core::server::start(cfg).await.unwrap();
                tx.send(r.links.clone()).unwrap();
                let _ = stopped.await;
            });
            // Dropping the runtime ends every task: listener, sockets, links.
            rt.shutdown_timeout(Duration::from_secs(2));
        });
        CoreNode { links: rx.recv().unwrap(), stop: Some(stop), thread: Some(thread) }
    }
}

impl Drop for CoreNode {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn wait_linked(links: &custos_core::relay::Links, want: bool, within: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < within {
        if links.is_linked("kms.acme.example").await == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn relay(url: &str, core_token: &str, body: String) -> String {
    let r = reqwest::Client::new()
        .post(format!("{url}/kms/kms.acme.example/messages"))
        .bearer_auth(core_token)
        .header("content-type", "application/jose")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kms_connects_out_and_serves_through_the_core() {
    let idp = Idp::start();
    let dir = tempfile::tempdir().unwrap();
    // The operator gives the KMS its key as PEM and the core its public half.
    let kms_key = jose::RsaPrivateKey::generate(2048, None).unwrap();
    let key_path = dir.path().join("kms-key.pem");
    std::fs::write(&key_path, kms_key.to_pem().as_bytes()).unwrap();
    let pub_path = dir.path().join("kms-pub.pem");
    std::fs::write(&pub_path, kms_key.public_key().to_pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let core_dir = dir.path().join("core");

    // An impostor KMS (another key, same domain) is refused.
    let imp_dir = dir.path().join("impostor");
    let imp_key = imp_dir.join("key.pem");
    std::fs::create_dir_all(&imp_dir).unwrap();
    std::fs::write(&imp_key, jose::RsaPrivateKey::generate(2048, None).unwrap().to_pem().as_bytes()).unwrap();
    let cc = core_config(&core_dir, &idp.issuer, port, &pub_path);
    let core = tokio::task::spawn_blocking(move || CoreNode::start(cc)).await.unwrap();
    let cfg = kms_config(&imp_dir, &idp.issuer, &imp_key, port);
    let impostor = tokio::task::spawn_blocking(move || kms_server::Server::start(&cfg)).await.unwrap();
    assert!(!wait_linked(&core.links, true, Duration::from_secs(2)).await, "an impostor KMS must not be linked");
    drop(impostor);

    // The real KMS links.
    let kms_dir = dir.path().join("kms");
    let cfg = kms_config(&kms_dir, &idp.issuer, &key_path, port);
    let kms = tokio::task::spawn_blocking(move || kms_server::Server::start(&cfg)).await.unwrap();
    assert!(wait_linked(&core.links, true, Duration::from_secs(5)).await, "the KMS links within 5 s");

    // A client: the core token pays for the relay; the KMS token rides inside.
    let url = format!("http://127.0.0.1:{port}");
    let core_token = idp.token(&[("sub", "alice"), ("aud", CORE_AUD)]).await;
    let kms_token = idp.token(&[("sub", "alice"), ("aud", "kms://kms.acme.example")]).await;
    // Pinned from the org's configuration, never from the core.
    let info = KmsInfo {
        domain: "kms.acme.example".into(),
        key: kms_key.public_key().clone().with_kid(kms_key.public_key().thumbprint()),
    };
    let ci = ClientInfo { client_id: "dev".into(), credential: Credential::bearer(kms_token) };
    let pending = begin_handshake(&info, ci.clone()).unwrap();
    let answer = relay(&url, &core_token, pending.wrapped.clone()).await;
    let session = pending.finish(&info, &answer).expect("handshake through the link");
    let mut req = Request::new(Method::Create, "/keys", Some(ci.clone()));
    req.body.count = Some(2);
    let answer = relay(&url, &core_token, session.wrap(&req).unwrap()).await;
    assert_eq!(session.unwrap(&info, &answer, &req.request_id).unwrap().status, Status::CREATED);

    // The core restarts on the same port; the KMS comes back by itself.
    tokio::task::spawn_blocking(move || drop(core)).await.unwrap();
    let cc = core_config(&core_dir, &idp.issuer, port, &pub_path);
    let core = tokio::task::spawn_blocking(move || CoreNode::start(cc)).await.unwrap();
    assert!(
        wait_linked(&core.links, true, Duration::from_secs(10)).await,
        "the KMS reconnects after the core restarts"
    );
    let ping = Request::new(Method::Update, "/ping", Some(ci.clone()));
    let answer = relay(&url, &core_token, session.wrap(&ping).unwrap()).await;
    assert_eq!(
        session.unwrap(&info, &answer, &ping.request_id).unwrap().status,
        Status::OK,
        "the session survives: tickets, not connections"
    );
    tokio::task::spawn_blocking(move || drop((kms, core))).await.unwrap();
}
