//! The org's DLP service end to end: `custos up` (which lists `dlp@acme.test`
//! in acme's KMS policy and as an org-level moderator at the core), `custos
//! bot dlp` as its own process. A card number and an org pattern are hidden
//! and reported (masked) to the compliance space; a number failing the Luhn
//! check is left alone; once the org revokes the service it reads nothing.

mod common;

use std::time::{Duration, Instant};

use common::{free_base, BotProcess, Person, Up};
use serde_json::Value;

fn events(who: &Person, space: &str) -> Vec<Value> {
    who.ok(&["read", space, "--limit", "200"])["events"].as_array().unwrap().clone()
}

fn reports(who: &Person, space: &str) -> Vec<String> {
    events(who, space)
        .iter()
        .filter(|e| e["sender"] == "dlp@acme.test" && e["kind"] == "message")
        .map(|e| e["text"].as_str().unwrap().to_string())
        .collect()
}

fn wait_reports(who: &Person, space: &str, n: usize) -> Vec<String> {
    let t = Instant::now();
    loop {
        let r = reports(who, space);
        if r.len() >= n {
            return r;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "only {r:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn dlp_hides_and_reports_until_the_org_revokes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let bob = Person::login(&up, &people, "bob@acme.test");
    let carol = Person::login(&up, &people, "carol@acme.test");
    let id = |v: Value| v["id"].as_str().unwrap().to_string();
    let reports_space = id(alice.ok(&["space", "create", "DLP reports", "--member", "carol@acme.test"]));
    alice.ok(&["space", "add", &reports_space, "dlp@acme.test"]);
    let sales = id(alice.ok(&["space", "create", "Sales", "--member", "bob@acme.test"]));
    alice.ok(&["space", "add", &sales, "dlp@acme.test"]);

    let dlp = BotProcess::start(
        &up,
        "dlp",
        2,
        &["--report-space", &reports_space, "--pattern", r"falcon=(?i)project\s+falcon"],
    );
    assert_eq!(dlp.first_line["bot"], "dlp@acme.test");

    let card = id(bob.ok(&["send", &sales, "my card is 4242 4242 4242 4242, charge it"]));
    bob.ok(&["send", &sales, "order 1234 5678 9012 3456 shipped"]);
    let falcon = id(bob.ok(&["send", &sales, "Project Falcon is a go"]));
    let got = wait_reports(&carol, &reports_space, 2);
    assert_eq!(got.len(), 2, "{got:?}");
    assert_eq!(got[0], format!("DLP: card number …4242 in space {sales} message {card} from bob@acme.test: hidden"));
    assert_eq!(got[1], format!("DLP: falcon …lcon in space {sales} message {falcon} from bob@acme.test: hidden"));
    assert!(got.iter().all(|r| !r.contains("4242 4242") && !r.contains("Project Falcon")), "reports are masked");
    // Hidden at the core: deletions by the DLP service target exactly the two.
    let hidden: Vec<String> = events(&alice, &sales)
        .iter()
        .filter(|e| e["kind"] == "delete" && e["sender"] == "dlp@acme.test")
        .map(|e| e["target"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(hidden, [card.clone(), falcon.clone()]);

    // A text file with a card number: reported (the core hides messages, not files).
    let sheet = tmp.path().join("customers.csv");
    std::fs::write(&sheet, "name,card\nann,5555 5555 5555 4444\n").unwrap();
    let fid = alice.ok(&["upload", &sales, sheet.to_str().unwrap()])["file"].as_str().unwrap().to_string();
    let got = wait_reports(&carol, &reports_space, 3);
    assert_eq!(
        got[2],
        format!(
            "DLP: card number …4444 in space {sales} file {fid} from alice@acme.test: reported (files are not hidden)"
        )
    );

    // The org revokes it: it can no longer read, so it neither hides nor reports.
    alice.ok(&["kms", "admin", "service", "revoke", "dlp@acme.test"]);
    std::thread::sleep(Duration::from_millis(1500));
    bob.ok(&["send", &sales, "another card 4111 1111 1111 1111"]);
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(reports(&carol, &reports_space).len(), 3);
    let deletions = events(&alice, &sales).iter().filter(|e| e["kind"] == "delete").count();
    assert_eq!(deletions, 2);
    let log = dlp.log.lock().unwrap().clone();
    assert!(log.contains("a message the bot cannot read"), "dlp log: {log}");
}
