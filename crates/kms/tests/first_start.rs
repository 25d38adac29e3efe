//! Two KMS nodes starting at once on one fresh data directory (one SQLite
//! database in it): they must end with one CMK file and one static key, both
//! serve that key, and a handshake with each works.
//!
//! Before the nodes shared a first-start lock and published files without
//! replacing them, each generated a CMK and a static key of its own; the
//! static key file held one of them while the other node served the other.

#[path = "common/server.rs"]
#[allow(dead_code)] // `Server::start` starts one node at a time; these start them at once.
mod server;

use std::path::Path;
use std::sync::{Arc, Barrier};

use kms_protocol::{ClientInfo, Credential, Method, Request, Status};
use server::{call, config_text, http_session, kms_info};
use testkit::Idp;

/// A node on its own thread and runtime, like `server::Server`, except that
/// `kms::server::start` waits at `barrier` so that both starts overlap.
struct Node {
    url: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Starts `n` nodes at once on `config`; each start's result (its URL, or the error).
fn start_at_once(config: &str, n: usize) -> Vec<Result<Node, String>> {
    let cfg = kms::config::Config::parse(config, Path::new("/")).expect("valid config");
    let barrier = Arc::new(Barrier::new(n));
    let mut pending = Vec::new();
    for _ in 0..n {
        let (cfg, barrier) = (cfg.clone(), barrier.clone());
        let (tx, rx) = std::sync::mpsc::channel::<Result<String, String>>();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            rt.block_on(async move {
                barrier.wait();
                match kms::server::start(&cfg, false).await {
                    Ok(running) => {
                        tx.send(Ok(format!("http://{}", running.addr))).unwrap();
                        let _ = stop_rx.await;
                        running.task.abort();
                    }
                    Err(e) => tx.send(Err(format!("{e:#}"))).unwrap(),
                }
            });
        });
        pending.push((rx, stop_tx, thread));
    }
    pending
        .into_iter()
        .map(|(rx, stop, thread)| match rx.recv().expect("the node reports") {
            Ok(url) => Ok(Node { url, stop: Some(stop), thread: Some(thread) }),
            Err(e) => {
                let _ = thread.join();
                Err(e)
            }
        })
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("kms.db") && !n.starts_with("audit.db"))
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_starting_at_once_share_one_static_key_and_one_cmk() {
    // The CMK passphrase comes from the environment, as in production (set
    // once, before any node's threads read it).
    std::env::set_var("CUSTOS_KMS_CMK_PASSPHRASE", "a test passphrase, long enough");
    let idp = Idp::start();
    let tok = idp.token(&[("sub", "alice"), ("aud", "kms://kms.acme.example")]).await;
    let ci = ClientInfo { client_id: "dev".into(), credential: Credential::bearer(tok) };

    // A few rounds, each on a fresh data directory: a race lost once is enough.
    for round in 0..3 {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config_text(dir.path(), &idp.issuer, "");
        let c = cfg.clone();
        let started = tokio::task::spawn_blocking(move || start_at_once(&c, 2)).await.unwrap();
        let nodes: Vec<Node> = started
            .into_iter()
            .enumerate()
            .map(|(i, r)| r.unwrap_or_else(|e| panic!("round {round}: node {i} did not start: {e}")))
            .collect();

        // One CMK file, one static key file, no temporary files left.
        let cmks = names(&dir.path().join("cmk"));
        assert_eq!(cmks.iter().filter(|n| n.ends_with(".cmk.json")).count(), 1, "round {round}: CMK files {cmks:?}");
        assert_eq!(cmks.len(), 1, "round {round}: the CMK directory holds {cmks:?}");
        let files = names(dir.path());
        assert!(
            files.iter().all(|n| !n.ends_with(".tmp") && !n.contains(".new")),
            "round {round}: left behind in the data directory: {files:?}"
        );

        // Both serve the key in the file: the same key, and the file's key.
        let infos = [kms_info(&nodes[0].url).await, kms_info(&nodes[1].url).await];
        assert_eq!(
            infos[0].key.thumbprint(),
            infos[1].key.thumbprint(),
            "round {round}: the two nodes serve different static keys"
        );
        let c = kms::config::Config::parse(&cfg, Path::new("/")).unwrap();
        let on_disk = tokio::task::spawn_blocking(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let cmk = rt.block_on(kms::server::open_cmk_for_tool(&c)).unwrap();
            kms::server::load_or_create_static_key(&c, &cmk).unwrap()
        })
        .await
        .unwrap();
        assert!(!on_disk.created);
        assert_eq!(
            on_disk.key.public_key().thumbprint(),
            infos[0].key.thumbprint(),
            "round {round}: the static key file holds another key than the nodes serve"
        );

        // A handshake with each works, and each answers in its session.
        for (node, info) in nodes.iter().zip(&infos) {
            let s = http_session(&node.url, info, &ci).await;
            let r = call(&node.url, info, &s, Request::new(Method::Update, "/ping", Some(ci.clone()))).await;
            assert_eq!(r.status, Status::OK, "round {round}: ping on {}", node.url);
        }
        tokio::task::spawn_blocking(move || drop(nodes)).await.unwrap();
    }
}

/// Without the start lock (a file system without locks, or tools run beside
/// a starting node), the files alone decide: nodes creating the static key
/// at once all end with the one key that was published, and its certificate.
#[test]
fn static_key_creators_racing_without_the_lock_use_the_published_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config_text(dir.path(), "http://127.0.0.1:9", "");
    let cfg = kms::config::Config::parse(&cfg, Path::new("/")).unwrap();
    let (cmk, _) =
        kms::crypto::Cmk::open_or_create(cfg.cmk.path.as_deref().unwrap(), b"a test passphrase, long enough").unwrap();
    let barrier = Barrier::new(4);
    let made: Vec<kms::server::StaticKey> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    kms::server::load_or_create_static_key(&cfg, &cmk).unwrap()
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(made.iter().filter(|k| k.created).count(), 1, "one creates the key file");
    let on_disk = kms::server::load_or_create_static_key(&cfg, &cmk).unwrap();
    for k in &made {
        assert_eq!(k.key.kid(), on_disk.key.kid(), "every node holds the key of the file");
        assert_eq!(k.cert_der, on_disk.cert_der, "and the certificate of the file");
    }
    let files = names(dir.path());
    assert_eq!(files, ["cmk", "static-cert.pem", "static-key.sealed"], "nothing else left behind");
}
