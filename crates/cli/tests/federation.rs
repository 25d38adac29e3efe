//! A space shared by two organizations, end to end: `custos up` as a spawned
//! process (one core; acme's and globex's KMSs, federated by `up`), the
//! `custos` CLI for every person. Globex's people read and write in acme's
//! space through their own KMS; only acme's members manage it; either org
//! ending the federation cuts globex's people off.

mod common;

use common::{free_base, Person, Up};

#[test]
fn a_space_shared_by_acme_and_globex() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let dave = Person::login(&up, &people, "dave@globex.test");
    let erin = Person::login(&up, &people, "erin@globex.test");

    // `up` federated the two KMSs (each admin sees the other org listed).
    let peers = alice.ok(&["kms", "admin", "federation", "list"]);
    assert_eq!(peers["kms.globex.test"]["state"], "allowed", "{peers}");
    assert_eq!(peers["kms.globex.test"]["orgDomain"], "globex.test");

    // Alice (acme) creates a space with dave (globex); both write, both read.
    let space = alice.ok(&["space", "create", "Joint venture", "--member", "dave@globex.test"]);
    let space = space["id"].as_str().unwrap().to_string();
    alice.ok(&["send", &space, "hello globex"]);
    let listed = dave.ok(&["spaces"]);
    assert_eq!(listed["spaces"][0]["title"], "Joint venture", "{listed}");
    assert_eq!(dave.texts(&space), ["hello globex"]);
    dave.ok(&["send", &space, "hello acme"]);
    assert_eq!(alice.texts(&space), ["hello globex", "hello acme"]);
    let events = alice.ok(&["read", &space]);
    let last = events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["sender"], "dave@globex.test");

    // A file from globex, read at acme.
    let src = tmp.path().join("terms.txt");
    std::fs::write(&src, b"term sheet v1\n".repeat(1000)).unwrap();
    let file = dave.ok(&["upload", &space, src.to_str().unwrap()])["file"].as_str().unwrap().to_string();
    let dest = tmp.path().join("terms.out");
    alice.ok(&["download", &file, dest.to_str().unwrap()]);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&src).unwrap());

    // Only acme's members manage acme's space; erin is not in it.
    let e = dave.fails(&["space", "add", &space, "erin@globex.test"]);
    assert!(e.contains("another organization's KMS"), "{e}");
    assert!(!erin.run(&["read", &space]).status.success());
    alice.ok(&["space", "add", &space, "erin@globex.test"]);
    assert_eq!(erin.texts(&space), ["hello globex", "hello acme"]);

    // Acme removes dave: he no longer reads what is sent afterwards.
    alice.ok(&["space", "remove", &space, "dave@globex.test"]);
    alice.ok(&["send", &space, "after dave left"]);
    assert!(!dave.run(&["read", &space]).status.success());
    assert_eq!(erin.texts(&space), ["hello globex", "hello acme", "after dave left"]);

    // Globex's admin (dave) ends the federation: erin is cut off, with the reason.
    dave.ok(&["kms", "admin", "federation", "end", "kms.acme.test"]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    // The core still serves her the ciphertext; nothing opens it, and each event says why.
    let events = erin.ok(&["read", &space]);
    let sealed: Vec<&serde_json::Value> =
        events["events"].as_array().unwrap().iter().filter(|e| e["key"].is_string()).collect();
    assert_eq!(sealed.len(), 3, "{events}");
    for e in sealed {
        assert_eq!(e["kind"], "unreadable", "{e}");
        assert!(e["error"].as_str().unwrap().contains("does not federate with kms.acme.test"), "{e}");
    }
    let peers = dave.ok(&["kms", "admin", "federation", "list"]);
    assert_eq!(peers["kms.acme.test"]["state"], "ended");
    // And re-allowing it (the pinned certificate kept) restores her access.
    let pem = tmp.path().join("acme.pem");
    std::fs::write(&pem, peers["kms.acme.test"]["trust"].as_str().unwrap()).unwrap();
    let url = peers["kms.acme.test"]["url"].as_str().unwrap().to_string();
    dave.ok(&[
        "kms",
        "admin",
        "federation",
        "allow",
        "kms.acme.test",
        "--org",
        "acme.test",
        "--trust",
        pem.to_str().unwrap(),
        "--url",
        &url,
    ]);
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(erin.texts(&space).len(), 3);
}
