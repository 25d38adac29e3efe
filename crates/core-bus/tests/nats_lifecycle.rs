//! NatsBus across the transport's lifecycle: a NATS server restart (subscriptions
//! survive the reconnect) and a closed connection (errors, never panics).
//!
//! The restart test runs its own `nats-server` (env `CUSTOS_TEST_NATS_SERVER`, else
//! `nats-server` on PATH or `/usr/sbin/nats-server`) on a free loopback port; the
//! closed-connection test uses the shared server at `CUSTOS_TEST_NATS_URL`.
//! A missing prerequisite skips (prints `SKIPPED (...)`) unless `CI` is set.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use core_bus::{BusError, EventBus, NatsBus};

/// A `nats-server` child process, killed on drop.
struct Server {
    child: Child,
}

impl Server {
    fn start(bin: &PathBuf, port: u16) -> std::io::Result<Server> {
        let child = Command::new(bin)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let server = Server { child };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline {
                return Err(std::io::Error::other("nats-server did not start listening"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn stop(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn nats_server_bin() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("CUSTOS_TEST_NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|paths| std::env::split_paths(&paths).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join("nats-server"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_server_restart() {
    let test = "subscriptions_survive_server_restart";
    let Some(bin) = nats_server_bin() else {
        skip_or_fail("no nats-server binary", test, &"not found");
        return;
    };
    let port = free_port();
    let server = match Server::start(&bin, port) {
        Ok(s) => s,
        Err(e) => return skip_or_fail(&format!("cannot run {}", bin.display()), test, &e),
    };
    let url = format!("nats://127.0.0.1:{port}");
    let prefix = unique_prefix();
    let a = NatsBus::connect(&url, &prefix).await.unwrap();
    let b = NatsBus::connect(&url, &prefix).await.unwrap();
    let mut on_a = a.subscribe("s1").await.unwrap();
    let mut on_b = b.subscribe("s1").await.unwrap();
    let mut other = a.subscribe("s2").await.unwrap();
    b.publish(notice("s1", 1)).await.unwrap();
    assert_eq!(recv(&mut on_a).await.seq, 1);
    assert_eq!(recv(&mut on_b).await.seq, 1);

    // Outage: publishing must not panic (it is buffered or fails with a BusError).
    server.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = b.publish(notice("s1", 2)).await;
    println!("publish during outage: {during:?}");
    let _server = Server::start(&bin, port).expect("restart nats-server");

    // Keep publishing newer notices until one comes through on the other node.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seq = 100;
    let got = loop {
        assert!(Instant::now() < deadline, "no notice after reconnect within 30 s");
        seq += 1;
        let _ = b.publish(notice("s1", seq)).await;
        match tokio::time::timeout(Duration::from_millis(250), on_a.next()).await {
            Ok(Some(n)) if n.seq > 100 => break n,
            Ok(Some(_)) => {} // the notice buffered during the outage may or may not arrive
            Ok(None) => panic!("subscription closed by the reconnect"),
            Err(_) => {}
        }
    };
    assert_eq!(got.space_id, "s1");
    // The same subscriptions keep working, on both nodes, in order, for the right space only.
    a.publish(notice("s1", 1000)).await.unwrap();
    loop {
        let n = recv(&mut on_b).await;
        if n.seq == 1000 {
            break;
        }
    }
    loop {
        let n = recv(&mut on_a).await;
        if n.seq == 1000 {
            break;
        }
    }
    assert_silent(&mut other, 200).await;
    assert_eq!(a.active_spaces(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connection_errors_without_panic() {
    let test = "closed_connection_errors_without_panic";
    let url = nats_url();
    let client = match async_nats::connect(url.as_str()).await {
        Ok(c) => c,
        Err(e) => return skip_or_fail(&format!("no NATS at {url}"), test, &e),
    };
    let bus = NatsBus::from_client(client.clone(), &unique_prefix(), 16).unwrap();
    let mut sub = bus.subscribe("s1").await.unwrap();
    bus.publish(notice("s1", 1)).await.unwrap();
    assert_eq!(recv(&mut sub).await.seq, 1);

    client.drain().await.unwrap();
    // The live subscription ends, and its registry entry is retired.
    let end = tokio::time::timeout(Duration::from_secs(10), sub.next()).await.expect("ends");
    assert_eq!(end, None);
    assert_eq!(sub.next().await, None);
    assert_eq!(bus.active_spaces(), 0);
    drop(sub);
    // Further operations fail with a BusError (once async-nats has wound the
    // connection down, which completes just after the drain).
    let deadline = Instant::now() + Duration::from_secs(5);
    let published = loop {
        let r = bus.publish(notice("s1", 2)).await;
        if r.is_err() || Instant::now() > deadline {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        matches!(published, Err(BusError::Transport { op: "publish", .. } | BusError::Timeout { .. })),
        "{published:?}"
    );
    let subscribed = bus.subscribe("s1").await;
    assert!(matches!(subscribed, Err(BusError::Transport { .. } | BusError::Timeout { .. })), "{:?}", subscribed.err());
    assert_eq!(bus.active_spaces(), 0);
}

#[test]
fn bad_prefix_is_rejected() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let r = rt.block_on(NatsBus::connect("nats://127.0.0.1:1", "bad prefix"));
    assert!(matches!(r, Err(BusError::InvalidPrefix(_))));
}
