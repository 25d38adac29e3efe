//! File chunks in S3-compatible storage: the same upload and download, with
//! the chunks landing in a bucket (moto's S3 server on loopback). Without
//! `moto_server` on PATH the test says SKIPPED, except under CI.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{key, sealed, start_with, Opts, User};
use reqwest::StatusCode;
use serde_json::json;

struct Moto(Child);

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_go_to_an_s3_bucket() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let child = match Command::new("moto_server")
        .args(["-H", "127.0.0.1", "-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(c) => c,
        Err(_) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED (no moto_server on PATH; pip install \"moto[server]\"): chunks_go_to_an_s3_bucket");
            return;
        }
        Err(e) => panic!("moto_server is required under CI: {e}"),
    };
    let _moto = Moto(child);
    let endpoint = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let t = Instant::now();
    // Create the bucket (moto accepts unsigned requests).
    loop {
        if let Ok(r) = http.put(format!("{endpoint}/custos-files")).send().await {
            if r.status().is_success() {
                break;
            }
        }
        assert!(t.elapsed() < Duration::from_secs(20), "moto_server did not start");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // SAFETY of the test: these are moto's dummy credentials, read by object_store from the environment.
    std::env::set_var("AWS_ACCESS_KEY_ID", "testing");
    std::env::set_var("AWS_SECRET_ACCESS_KEY", "testing");
    let top = format!("[blobs.s3]\nbucket = \"custos-files\"\nendpoint = \"{endpoint}\"\nallow_http = true\n");
    let core = start_with(Arc::new(testkit::Idp::start()), Opts { top: "", org: "", tail: &top }).await;
    let alice = User::new(&core, "alice").await;
    let (k, ku) = key();
    let sid = alice.space().await;
    let data: Vec<u8> = (0..9000u32).map(|i| (i % 251) as u8).collect();
    let (st, f) = alice
        .post(
            &format!("/v1/spaces/{sid}/files"),
            json!({"size": data.len(), "chunk_size": 4096, "meta": sealed(&k, &ku, "name")}),
        )
        .await;
    assert_eq!(st, StatusCode::CREATED, "{f}");
    let fid = f["id"].as_str().unwrap().to_string();
    for (i, c) in data.chunks(4096).enumerate() {
        assert_eq!(alice.put_chunk(&fid, i as i64, c.to_vec()).await.0, StatusCode::NO_CONTENT);
    }
    assert_eq!(alice.post(&format!("/v1/files/{fid}/complete"), json!({})).await.0, StatusCode::OK);
    let mut got = Vec::new();
    for i in 0..3 {
        let r = alice
            .http
            .get(format!("{}/v1/files/{fid}/chunks/{i}", core.url))
            .bearer_auth(&alice.token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        got.extend(r.bytes().await.unwrap());
    }
    assert_eq!(got, data);
    // The chunks are in the bucket, not on the core's disk.
    let listing = http
        .get(format!("{endpoint}/custos-files?list-type=2&prefix=files/{fid}/"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(listing.matches("<Key>").count(), 3, "{listing}");
    assert!(!core.dir.path().join("blobs").exists(), "nothing written locally");
}
