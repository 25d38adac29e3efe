//! End to end, as a person would: `custos up` as a spawned process on real
//! loopback ports, and the `custos` CLI for every step (login, spaces,
//! messages, live tail, files), each user with their own config directory.

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod common;

use common::{free_base, Person, Up, BIN};

fn tail_output(child: Child, within: Duration) -> Vec<Value> {
    let pid = child.id();
    let (done, wait) = std::sync::mpsc::channel::<()>();
    let killer = std::thread::spawn(move || {
        // Stop a tail that never got its events (the assertion then says what it got).
        if wait.recv_timeout(within).is_err() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    });
    let out = child.wait_with_output().unwrap();
    let _ = done.send(());
    killer.join().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

fn write_pattern(path: &Path, size: u64) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut block = vec![0u8; 1 << 20];
    let mut x: u64 = 0x9E3779B97F4A7C15 ^ size;
    let mut left = size;
    while left > 0 {
        for b in block.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
}

fn same_files(a: &Path, b: &Path) -> bool {
    let (mut fa, mut fb) = (std::fs::File::open(a).unwrap(), std::fs::File::open(b).unwrap());
    if fa.metadata().unwrap().len() != fb.metadata().unwrap().len() {
        return false;
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba).unwrap();
        if n == 0 {
            return true;
        }
        fb.read_exact(&mut bb[..n]).unwrap();
        if ba[..n] != bb[..n] {
            return false;
        }
    }
}

fn blob_dir(up: &Up, file: &str) -> PathBuf {
    up.data.join("core").join("blobs").join("files").join(file)
}

#[test]
fn chat_invite_tail_files_tampering_and_removal() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let bob = Person::login(&up, &people, "bob@acme.test");
    let carol = Person::login(&up, &people, "carol@acme.test");
    assert_eq!(alice.ok(&["whoami"])["user"], "alice@acme.test");

    // The credentials file is the user's alone.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(alice.dir.join("credentials.json")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Create, invite, chat.
    let space = alice.ok(&["space", "create", "Launch plans", "--member", "bob@acme.test"]);
    let space = space["id"].as_str().unwrap().to_string();
    let listed = bob.ok(&["spaces"]);
    assert_eq!(listed["spaces"][0]["title"], "Launch plans");
    let tail = bob.tail(&space, 2);
    alice.ok(&["send", &space, "hello bob"]);
    alice.ok(&["send", &space, "the launch is thursday"]);
    let got = tail_output(tail, Duration::from_secs(30));
    let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["hello bob", "the launch is thursday"], "bob's live tail: {got:?}");
    assert!(got.iter().all(|m| m["sender"] == "alice@acme.test"));
    let reply_to =
        bob.ok(&["read", &space])["events"].as_array().unwrap().last().unwrap()["id"].as_str().unwrap().to_string();
    bob.ok(&["send", &space, "see you there", "--reply-to", &reply_to]);
    // Carol is not in the space yet.
    assert!(carol.fails(&["read", &space]).contains("refused"));
    alice.ok(&["space", "add", &space, "carol@acme.test"]);
    assert_eq!(carol.texts(&space), ["hello bob", "the launch is thursday", "see you there"]);

    // A 50 MB file round trip, with progress.
    let big = tmp.path().join("big.bin");
    write_pattern(&big, 50 * 1000 * 1000);
    let out = alice.run(&["upload", &space, big.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let progress: Vec<Value> =
        String::from_utf8_lossy(&out.stderr).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    assert!(progress.len() >= 10, "upload progress: {progress:?}");
    let last = progress.last().unwrap();
    assert_eq!(last["done"], last["total"]);
    let file = serde_json::from_slice::<Value>(&out.stdout).unwrap()["file"].as_str().unwrap().to_string();
    let dest = tmp.path().join("big.out");
    let out = bob.run(&["download", &file, dest.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stderr).lines().filter(|l| l.contains("\"progress\":\"download\"")).count() >= 10
    );
    assert!(same_files(&big, &dest));
    // The provider's copy is not the file.
    let first_chunk = std::fs::read(blob_dir(&up, &file).join("00000000")).unwrap();
    let plain = std::fs::read(&big).unwrap();
    assert!(!first_chunk.windows(64).any(|w| w == &plain[1000..1064]));
    drop(plain);

    // Tampering at rest: two chunks swapped, the last chunk truncated, the last chunk gone.
    let small = tmp.path().join("three-chunks.bin");
    write_pattern(&small, 10 * 1024 * 1024);
    let f2 = alice.ok(&["upload", &space, small.to_str().unwrap()])["file"].as_str().unwrap().to_string();
    let dir = blob_dir(&up, &f2);
    let (c0, c1, c2) = (dir.join("00000000"), dir.join("00000001"), dir.join("00000002"));
    let (b0, b1, b2) = (std::fs::read(&c0).unwrap(), std::fs::read(&c1).unwrap(), std::fs::read(&c2).unwrap());
    let dest2 = tmp.path().join("three.out");
    std::fs::write(&c0, &b1).unwrap();
    std::fs::write(&c1, &b0).unwrap();
    let err = bob.fails(&["download", &f2, dest2.to_str().unwrap()]);
    assert!(err.contains("failed verification"), "swapped chunks: {err}");
    assert!(!dest2.exists(), "a failed download must leave nothing behind");
    std::fs::write(&c0, &b0).unwrap();
    std::fs::write(&c1, &b1).unwrap();
    std::fs::write(&c2, &b2[..b2.len() - 100]).unwrap();
    let err = bob.fails(&["download", &f2, dest2.to_str().unwrap()]);
    assert!(err.contains("failed verification") || err.contains("truncated"), "truncated chunk: {err}");
    assert!(!dest2.exists());
    std::fs::remove_file(&c2).unwrap();
    bob.fails(&["download", &f2, dest2.to_str().unwrap()]);
    assert!(!dest2.exists());
    std::fs::write(&c2, &b2).unwrap();
    bob.ok(&["download", &f2, dest2.to_str().unwrap()]);
    assert!(same_files(&small, &dest2), "restored chunks download again");

    // Removal rotates the key; the removed member reads nothing new.
    let before = alice.ok(&["read", &space])["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["kind"] == "message")
        .unwrap()["key"]
        .clone();
    let why = alice.ok(&["space", "explain", &space, "carol@acme.test"]);
    assert_eq!((why["authorized"].as_bool(), why["via"].as_str()), (Some(true), Some("member")), "{why}");
    alice.ok(&["space", "remove", &space, "carol@acme.test"]);
    let why = alice.ok(&["space", "explain", &space, "carol@acme.test"]);
    assert_eq!(why["authorized"], false, "{why}");
    assert!(why["reason"].as_str().unwrap().contains("no authorization"), "{why}");
    alice.ok(&["send", &space, "carol is gone: budget 2.4M"]);
    let events = alice.ok(&["read", &space])["events"].as_array().unwrap().clone();
    let after = events.iter().rev().find(|e| e["kind"] == "message").unwrap();
    assert_eq!(after["text"], "carol is gone: budget 2.4M");
    assert_ne!(after["key"], before, "the key must rotate on removal");
    assert!(carol.fails(&["read", &space]).contains("refused"));
    assert_eq!(bob.texts(&space).last().unwrap(), "carol is gone: budget 2.4M");

    // The second organization works on its own KMS and identity provider.
    let dave = Person::login(&up, &people, "dave@globex.test");
    let erin = Person::login(&up, &people, "erin@globex.test");
    let g = dave.ok(&["space", "create", "Globex board", "--member", "erin@globex.test"])["id"]
        .as_str()
        .unwrap()
        .to_string();
    dave.ok(&["send", &g, "hello from globex"]);
    assert_eq!(erin.texts(&g), ["hello from globex"]);
    // The KMS audited all of it: export (where the KMS runs), verify offline with its public key.
    let secrets: toml::Value = toml::from_str(&std::fs::read_to_string(up.data.join("secrets.toml")).unwrap()).unwrap();
    let pass = secrets["cmk"]["acme.test"].as_str().unwrap();
    let export = tmp.path().join("audit.jsonl");
    let out = Command::new(BIN)
        .args(["kms", "audit-export", "--config"])
        .arg(up.data.join("acme.test").join("kms.toml"))
        .arg("--out")
        .arg(&export)
        .env("CUSTOS_UP_CMK_ACME_TEST", pass)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log = std::fs::read_to_string(&export).unwrap();
    assert!(log.lines().any(|l| l.contains("\"key_release\"") && l.contains("bob@acme.test")));
    assert!(log.lines().any(|l| l.contains("\"authorization_delete\"") && l.contains("carol@acme.test")));
    assert!(!log.contains("2.4M") && !log.contains("hello bob"), "no plaintext in the audit log");
    let key = up.data.join("acme.test").join("kms-public.pem");
    let verify = |path: &Path| {
        Command::new(BIN).args(["--json", "audit", "verify"]).arg(path).arg("--key").arg(&key).output().unwrap()
    };
    let ok = verify(&export);
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));
    let report: Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert!(report["entries"].as_u64().unwrap() > 20, "{report}");
    let forged = tmp.path().join("forged.jsonl");
    std::fs::write(&forged, log.replacen("bob@acme.test", "eve@acme.test", 1)).unwrap();
    let bad = verify(&forged);
    assert!(!bad.status.success());
    assert_eq!(serde_json::from_slice::<Value>(&bad.stdout).unwrap()["problem"]["kind"], "modified_entry");
    let lines: Vec<&str> = log.lines().collect();
    std::fs::write(&forged, lines[..lines.len() - 3].join("\n") + "\n").unwrap();
    assert!(!verify(&forged).status.success(), "a log cut short must not verify");

    // Across organizations: dave (globex) reads acme's space through globex's KMS
    // (federation; tests/federation.rs goes further).
    alice.ok(&["space", "add", &space, "dave@globex.test"]);
    let v = dave.ok(&["read", &space]);
    let events = v["events"].as_array().unwrap();
    assert!(events.iter().all(|e| e["kind"] != "unreadable"), "{v}");
    assert!(events.iter().any(|e| e["text"] == "hello bob"), "{v}");
}

/// Runs a command that reports its own peak resident memory (KiB, the
/// kernel's VmHWM of its own address space) and returns it.
fn run_measured(mut cmd: Command) -> u64 {
    let out = cmd.env("CUSTOS_REPORT_MEMORY", "1").output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    err.lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find_map(|v| v["peak_rss_kib"].as_u64())
        .unwrap_or_else(|| panic!("no memory report: {err}"))
}

#[test]
fn one_gigabyte_up_and_down_in_bounded_memory() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let bob = Person::login(&up, &people, "bob@acme.test");
    let space =
        alice.ok(&["space", "create", "Big files", "--member", "bob@acme.test"])["id"].as_str().unwrap().to_string();
    let big = tmp.path().join("gig.bin");
    write_pattern(&big, 1 << 30);

    let mut upload = alice.cmd();
    upload.args(["upload", &space, big.to_str().unwrap()]);
    let up_kib = run_measured(upload);
    let file = bob.ok(&["read", &space])["events"]
        .as_array()
        .unwrap()
        .iter()
        .rev()
        .find(|e| e["kind"] == "file_ready")
        .unwrap()["target"]
        .as_str()
        .unwrap()
        .to_string();
    let dest = tmp.path().join("gig.out");
    let mut download = bob.cmd();
    download.args(["download", &file, dest.to_str().unwrap()]);
    let down_kib = run_measured(download);
    eprintln!("1 GiB: upload peak RSS {up_kib} KiB, download peak RSS {down_kib} KiB");
    assert!(up_kib < 64 * 1024, "upload peak RSS {up_kib} KiB");
    assert!(down_kib < 64 * 1024, "download peak RSS {down_kib} KiB");
    assert!(same_files(&big, &dest));
    drop(up);
}

#[test]
fn every_server_restarts_mid_conversation_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("up");
    let base = free_base();
    let mut up = Up::start(&data, base);
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let bob = Person::login(&up, &people, "bob@acme.test");
    let space = alice.ok(&["space", "create", "Ops", "--member", "bob@acme.test"])["id"].as_str().unwrap().to_string();
    for i in 1..=3 {
        alice.ok(&["send", &space, &format!("before {i}")]);
    }
    let tail = bob.tail(&space, 2);
    alice.ok(&["send", &space, "just before the crash"]);
    // Every server dies at once (SIGKILL) right after acknowledging.
    up.kill9();
    let up = Up::start(&data, base);
    assert_eq!(up.base, base);
    alice.ok(&["send", &space, "after the restart"]);
    let got = tail_output(tail, Duration::from_secs(60));
    let texts: Vec<&str> = got.iter().filter_map(|m| m["text"].as_str()).collect();
    assert_eq!(texts, ["just before the crash", "after the restart"], "the live tail resumes across the restart");
    assert_eq!(bob.texts(&space), ["before 1", "before 2", "before 3", "just before the crash", "after the restart"]);
    // Logins, KMS keys and files all survived.
    let f = tmp.path().join("f.bin");
    write_pattern(&f, 300_000);
    let id = alice.ok(&["upload", &space, f.to_str().unwrap()])["file"].as_str().unwrap().to_string();
    let d = tmp.path().join("f.out");
    bob.ok(&["download", &id, d.to_str().unwrap()]);
    assert!(same_files(&f, &d));
}

#[test]
fn a_core_relaying_to_another_kms_key_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let acme_issuer = up.ready["orgs"][0]["issuer"].as_str().unwrap().to_string();

    // An impostor KMS claiming acme's domain, with a key of its own, and a
    // rogue core that relays acme's KMS traffic to it.
    let rogue = tmp.path().join("rogue");
    std::fs::create_dir_all(&rogue).unwrap();
    let ports = free_base();
    let kms_cfg = format!(
        "listen = \"127.0.0.1:{ports}\"\ndomain = \"kms.acme.test\"\norg_domain = \"acme.test\"\ndata_dir = \"kms\"\n[cmk]\npassphrase_env = \"ROGUE_CMK\"\n[identity]\naudience = \"kms://kms.acme.test\"\n[[identity.issuers]]\nissuer = \"{acme_issuer}\"\norg_domain = \"acme.test\"\n"
    );
    std::fs::write(rogue.join("kms.toml"), kms_cfg).unwrap();
    let core_cfg = format!(
        "listen = \"127.0.0.1:{}\"\ndata_dir = \"core\"\n[identity]\naudience = \"https://core.custos.test\"\n[[identity.issuers]]\nissuer = \"{acme_issuer}\"\norg_domain = \"acme.test\"\n[[orgs]]\ndomain = \"acme.test\"\nkms_uri = \"kms://kms.acme.test\"\nkms_url = \"http://127.0.0.1:{ports}\"\n",
        ports + 1
    );
    std::fs::write(rogue.join("core.toml"), core_cfg).unwrap();
    let mut kms = Command::new(BIN)
        .args(["kms", "serve", "--config"])
        .arg(rogue.join("kms.toml"))
        .env("ROGUE_CMK", "a long passphrase for the rogue")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut core = Command::new(BIN)
        .args(["core", "serve", "--config"])
        .arg(rogue.join("core.toml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    for port in [ports, ports + 1] {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "rogue server on {port} did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // Alice's org profile pins the real KMS key; only the core URL is the rogue's.
    let text = std::fs::read_to_string(up.profile("acme.test")).unwrap();
    let text = text.replace(&format!("http://127.0.0.1:{}", up.base), &format!("http://127.0.0.1:{}", ports + 1));
    let profile = tmp.path().join("rogue.profile.toml");
    std::fs::write(&profile, text).unwrap();
    // Logging in already talks to the KMS (who does it say I am?): refused there.
    let dir = tmp.path().join("people").join("alice-rogue");
    let mut child = Command::new(BIN)
        .args(["--config-dir"])
        .arg(&dir)
        .args(["login", "--org"])
        .arg(&profile)
        .args(["--user", "alice@acme.test", "--password-stdin"])
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(up.password("alice@acme.test").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not signed by the pinned KMS key"), "{err}");
    assert!(!dir.join("credentials.json").exists(), "a refused login stores nothing");
    // Through the honest core, the same person with the same pin works.
    let honest = Person::login(&up, &tmp.path().join("people2"), "alice@acme.test");
    honest.ok(&["space", "create", "Secret plans"]);
    let _ = kms.kill();
    let _ = core.kill();
    let _ = kms.wait();
    let _ = core.wait();
}

/// Approves (or denies) a device login on the IdP's page, as the person would in a browser.
fn decide_device_login(issuer: &str, user_code: &str, user: &str, password: &str, action: &str) -> (u16, String) {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let r = reqwest::Client::new()
            .post(format!("{issuer}/device"))
            .form(&[("user_code", user_code), ("username", user), ("password", password), ("action", action)])
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    })
}

/// Starts `custos login` without `--user` (device flow); returns the child and the user code.
fn start_device_login(dir: &Path, profile: &Path) -> (Child, String, BufReader<std::process::ChildStderr>) {
    let mut child = Command::new(BIN)
        .args(["--json", "--config-dir"])
        .arg(dir)
        .args(["login", "--org"])
        .arg(profile)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).unwrap();
    let v: Value = serde_json::from_str(&line).unwrap_or_else(|_| panic!("device login prompt: {line}"));
    assert!(v["verification_uri"].as_str().unwrap().contains("/device"));
    (child, v["user_code"].as_str().unwrap().to_string(), err)
}

#[test]
fn device_login_approved_in_the_browser_and_refusals() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let issuer = up.ready["orgs"][0]["issuer"].as_str().unwrap().to_string();
    let profile = up.profile("acme.test");

    // A wrong password on the page approves nothing; the right one does.
    let dir = tmp.path().join("bob");
    let (child, code, _err) = start_device_login(&dir, &profile);
    let (status, page) = decide_device_login(&issuer, &code, "bob@acme.test", "wrong password", "approve");
    assert_ne!(status, 200, "{page}");
    let (status, page) = decide_device_login(&issuer, &code, "bob@acme.test", &up.password("bob@acme.test"), "approve");
    assert_eq!(status, 200, "{page}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap()["user"], "bob@acme.test");
    let bob = Person { dir };
    assert_eq!(bob.ok(&["whoami"])["user"], "bob@acme.test");

    // Denied: the CLI says so and stores nothing.
    let dir = tmp.path().join("carol");
    let (child, code, mut err) = start_device_login(&dir, &profile);
    let (status, _) = decide_device_login(&issuer, &code, "carol@acme.test", &up.password("carol@acme.test"), "deny");
    assert_eq!(status, 200);
    let status = child.wait_with_output().unwrap().status;
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    assert!(!status.success());
    assert!(rest.contains("access_denied"), "{rest}");
    assert!(!dir.join("credentials.json").exists());

    // A wrong password at the command line, and a profile whose KMS key is not a key.
    let err = Command::new(BIN)
        .args(["--config-dir"])
        .arg(tmp.path().join("mallory"))
        .args(["login", "--org"])
        .arg(&profile)
        .args(["--user", "alice@acme.test", "--password-stdin"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("login refused"), "{}", String::from_utf8_lossy(&err.stderr));
    let bad = tmp.path().join("bad.profile.toml");
    let text = std::fs::read_to_string(&profile).unwrap();
    let start = text.find("kms_key = ").unwrap();
    let end = start + text[start..].find('\n').unwrap();
    std::fs::write(&bad, format!("{}kms_key = '{{\"kty\":\"oct\",\"k\":\"AAAA\"}}'{}", &text[..start], &text[end..]))
        .unwrap();
    let out = Command::new(BIN)
        .args(["--config-dir"])
        .arg(tmp.path().join("x"))
        .args(["login", "--org"])
        .arg(&bad)
        .args(["--user", "alice@acme.test"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("kms_key"), "{}", String::from_utf8_lossy(&out.stderr));

    // Ctrl-C stops everything cleanly.
    let mut up = up;
    let pid = up.child.id();
    Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = up.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "custos up did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "custos up exit on Ctrl-C: {status:?}");
}

/// Enterprise control from the command line: an org admin registers a bot,
/// members add it to a space, the admin revokes it mid-conversation with
/// `custos kms admin service revoke`, and then disables and re-enables a user.
/// (carol stands in for the bot: any user id can be registered as a service.)
#[test]
fn an_admin_revokes_a_bot_mid_conversation_and_disables_a_user() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test"); // a bootstrap KMS admin in `up`
    let bob = Person::login(&up, &people, "bob@acme.test");
    let bot = Person::login(&up, &people, "carol@acme.test");

    // Only admins touch policy.
    assert!(bob.fails(&["kms", "admin", "show"]).contains("org admins"));
    assert!(bob.fails(&["kms", "admin", "service", "allow", "carol"]).contains("org admins"));
    let v = alice.ok(&["kms", "admin", "service", "allow", "carol", "--kind", "bot"]);
    assert!(v["changes"].as_str().unwrap().contains("service carol@acme.test added"), "{v}");
    assert!(alice.fails(&["kms", "admin", "service", "revoke", "nobody"]).contains("not a registered service"));
    assert!(alice
        .fails(&["kms", "admin", "service", "allow", "x", "--content-from", "yesterday"])
        .contains("RFC 3339"));
    let listed = alice.ok(&["kms", "admin", "service", "list"]);
    assert_eq!(listed["carol@acme.test"]["state"], "allowed");

    let space = alice.ok(&["space", "create", "Standup", "--member", "bob@acme.test", "--member", "carol@acme.test"]);
    let space = space["id"].as_str().unwrap().to_string();
    alice.ok(&["send", &space, "before the revocation"]);
    assert_eq!(bot.texts(&space), ["before the revocation"]);
    let key_of = |p: &Person, text: &str| -> String {
        let v = p.ok(&["read", &space]);
        let e = v["events"].as_array().unwrap().iter().find(|e| e["text"] == text).cloned().unwrap();
        e["key"].as_str().unwrap().to_string()
    };
    let k_before = key_of(&bob, "before the revocation");

    // Revoked mid-conversation: the bot's next request fails, whatever it cached.
    let v = alice.ok(&["kms", "admin", "service", "revoke", "carol"]);
    assert!(v["changes"].as_str().unwrap().contains("revoked"), "{v}");
    std::thread::sleep(Duration::from_millis(1100)); // the senders' current-key cache (1 s)
    alice.ok(&["send", &space, "after the revocation"]);
    let out = bot.run(&["read", &space]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("after the revocation") && !text.contains("before the revocation"), "{text}");
    assert!(text.contains("revoked"), "the bot is told why: {text}");
    // Members go on, under a fresh key the bot never had.
    assert_eq!(bob.texts(&space), ["before the revocation", "after the revocation"]);
    assert_ne!(key_of(&bob, "after the revocation"), k_before);

    // A user disabled at once, whatever tokens it holds; enabled again.
    alice.ok(&["kms", "admin", "user", "disable", "bob"]);
    let out = bob.run(&["read", &space]);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!text.contains("after the revocation") && text.contains("disabled"), "{text}");
    alice.ok(&["kms", "admin", "user", "enable", "bob"]);
    assert_eq!(bob.texts(&space), ["before the revocation", "after the revocation"]);
    let policy = alice.ok(&["kms", "admin", "show"]);
    assert_eq!(policy["policy"]["services"]["carol@acme.test"]["state"], "revoked");
    assert!(policy["policy"]["services"]["carol@acme.test"]["revokedAt"].is_string());
}
