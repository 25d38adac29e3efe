//! Search over encrypted spaces, end to end (`custos up`, the CLI): words,
//! stems, accents and type-ahead prefixes are found by members on any
//! client; non-members get nothing; history stays searchable across a key
//! rotation; the provider's files hold neither the words nor unkeyed hashes
//! of them.

mod common;

use std::time::{Duration, Instant};

use common::{free_base, BotProcess, Person, Up};
use serde_json::Value;

fn found(who: &Person, args: &[&str]) -> Vec<String> {
    let mut a = vec!["search"];
    a.extend_from_slice(args);
    let v = who.ok(&a);
    v["results"].as_array().unwrap().iter().map(|r| r["text"].as_str().unwrap().to_string()).collect()
}

#[test]
fn members_search_encrypted_spaces_and_the_provider_learns_no_words() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let bob = Person::login(&up, &people, "bob@acme.test");
    let carol = Person::login(&up, &people, "carol@acme.test");
    let space =
        alice.ok(&["space", "create", "Plans", "--member", "bob@acme.test"])["id"].as_str().unwrap().to_string();
    let other = alice.ok(&["space", "create", "Other"])["id"].as_str().unwrap().to_string();
    alice.ok(&["send", &space, "We launch the new Café menu on Monday"]);
    alice.ok(&["send", &space, "Budget review on Friday"]);
    bob.ok(&["send", &space, "Running late, sorry"]);
    alice.ok(&["send", &other, "launch elsewhere"]);

    // Bob (another client) finds by word, accent-insensitively, by stem and by prefix.
    let cafe = "We launch the new Café menu on Monday";
    assert_eq!(found(&bob, &["cafe"]), [cafe]);
    assert_eq!(found(&bob, &["CAFÉ", "--space", &space]), [cafe]);
    assert_eq!(found(&bob, &["laun"]), [cafe], "type-ahead; bob is not in the other space");
    assert_eq!(found(&bob, &["run"]), ["Running late, sorry"]);
    assert_eq!(found(&bob, &["budget frid"]), ["Budget review on Friday"]);
    assert!(found(&bob, &["tuesday"]).is_empty());
    let e = bob.fails(&["search", "a"]);
    assert!(e.contains("no searchable word"), "{e}");
    // Alice's search covers both her spaces.
    let mut both = found(&alice, &["launch"]);
    both.sort();
    assert_eq!(both, ["We launch the new Café menu on Monday", "launch elsewhere"]);
    // Carol, not a member, gets nothing of the space.
    assert!(!carol.run(&["search", "cafe", "--space", &space]).status.success());

    // A removal rotates the key; old and new messages stay searchable.
    alice.ok(&["space", "add", &space, "carol@acme.test"]);
    alice.ok(&["space", "remove", &space, "carol@acme.test"]);
    alice.ok(&["send", &space, "Launch checklist is ready"]);
    let mut launch = found(&bob, &["launch", "--space", &space]);
    launch.sort();
    assert_eq!(launch, ["Launch checklist is ready", cafe]);
    let keys: Vec<Value> = bob.ok(&["read", &space])["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "message")
        .map(|e| e["key"].clone())
        .collect();
    assert_ne!(keys.first(), keys.last(), "the key rotated");
    assert!(!carol.run(&["search", "launch", "--space", &space]).status.success());

    // The provider's files: ciphertext and blinded tokens, no words and no unkeyed hashes of them.
    let core_dir = tmp.path().join("up").join("core");
    let mut bytes = Vec::new();
    for entry in std::fs::read_dir(&core_dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            bytes.extend(std::fs::read(&p).unwrap());
        }
    }
    assert!(bytes.len() > 10_000, "the core's database is there");
    for word in ["launch", "Launch", "Café", "cafe", "Budget", "budget", "Monday", "monday", "Running", "checklist"] {
        assert!(!bytes.windows(word.len()).any(|w| w == word.as_bytes()), "{word:?} is in the core's files");
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, word.to_lowercase().as_bytes());
        let unkeyed = &digest.as_ref()[..16];
        assert!(!bytes.windows(16).any(|w| w == unkeyed), "an unkeyed hash of {word:?} is in the core's files");
    }
}

/// How many key versions a space's search tokens are under, read from the core's database.
fn key_versions(up: &Up, space: &str) -> i64 {
    let db = up.data.join("core").join("core.db");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        use sqlx::{Connection, Row};
        let mut c = sqlx::SqliteConnection::connect(&format!("sqlite://{}?mode=ro", db.display())).await.unwrap();
        let row = sqlx::query("SELECT COUNT(DISTINCT key_uri) AS n FROM core_postings WHERE space_id = ?")
            .bind(space)
            .fetch_one(&mut c)
            .await
            .unwrap();
        row.get::<i64, _>("n")
    })
}

#[test]
fn the_org_indexer_reindexes_history_under_the_newest_key() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let bob = Person::login(&up, &people, "bob@acme.test");
    let space =
        alice.ok(&["space", "create", "Plans", "--member", "bob@acme.test"])["id"].as_str().unwrap().to_string();
    alice.ok(&["send", &space, "quarterly numbers attached"]);
    bob.ok(&["send", &space, "numbers look good"]);
    alice.ok(&["space", "add", &space, "carol@acme.test"]);
    alice.ok(&["space", "remove", &space, "carol@acme.test"]);
    alice.ok(&["send", &space, "new numbers after the rotation"]);
    assert_eq!(key_versions(&up, &space), 2, "tokens under the old and the new key");
    // A text file: its text is indexed by the org's indexer (clients index only what they type).
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "the zeppelin schedule for the offsite\n").unwrap();
    let file = alice.ok(&["upload", &space, notes.to_str().unwrap()])["file"].as_str().unwrap().to_string();

    // The org's indexer, added like any member, re-indexes everything under the newest key.
    alice.ok(&["space", "add", &space, "indexer@acme.test"]);
    let indexer = BotProcess::start(&up, "indexer", 1, &["--every", "1"]);
    assert_eq!(indexer.first_line["bot"], "indexer@acme.test");
    let t = Instant::now();
    loop {
        let log = indexer.log.lock().unwrap().clone();
        let done = log
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .any(|v| v["reindexed"].as_str() == Some(space.as_str()) && v["messages"].as_u64() == Some(4));
        if done {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(30), "the indexer did not re-index: {log}");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(key_versions(&up, &space), 1, "one key version after re-indexing");
    let mut got = found(&bob, &["numbers", "--space", &space]);
    got.sort();
    assert_eq!(got, ["new numbers after the rotation", "numbers look good", "quarterly numbers attached"]);
    let v = bob.ok(&["search", "zeppelin", "--space", &space]);
    let hits = v["results"].as_array().unwrap();
    assert_eq!(hits.len(), 1, "{v}");
    assert_eq!((hits[0]["kind"].as_str(), hits[0]["target"].as_str()), (Some("file_ready"), Some(file.as_str())));

    // The org revokes the indexer: after the next rotation it can no longer re-index.
    alice.ok(&["kms", "admin", "service", "revoke", "indexer@acme.test"]);
    std::thread::sleep(Duration::from_millis(1500));
    alice.ok(&["space", "add", &space, "carol@acme.test"]);
    alice.ok(&["space", "remove", &space, "carol@acme.test"]);
    alice.ok(&["send", &space, "numbers after the indexer was revoked"]);
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(key_versions(&up, &space), 2, "nothing re-indexed after the revocation");
    let log = indexer.log.lock().unwrap().clone();
    assert!(log.contains("warning"), "the indexer says it failed: {log}");
    // Members' own indexing goes on: the new message is found.
    assert!(found(&bob, &["revoked", "--space", &space]).contains(&"numbers after the indexer was revoked".to_string()));
}
