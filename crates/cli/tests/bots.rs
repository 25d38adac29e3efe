//! The example poll bot end to end: `custos up`, the CLI for people,
//! `custos bot poll` as its own process, first over the core's WebSocket
//! (socket mode), then behind a signed webhook; a forged webhook request is
//! refused; the org revokes the bot mid-conversation and it goes silent,
//! while the next message goes under a fresh key.

mod common;

use std::time::{Duration, Instant};

use common::{free_base, BotProcess, Person, Up};
use serde_json::Value;

/// Waits until `who` sees a message with exactly `text` from the bot.
fn bot_says(who: &Person, space: &str, text: &str) {
    let t = Instant::now();
    loop {
        let v = who.ok(&["read", space, "--limit", "200"]);
        let found =
            v["events"].as_array().unwrap().iter().any(|e| e["sender"] == "pollbot@acme.test" && e["text"] == text);
        if found {
            return;
        }
        assert!(t.elapsed() < Duration::from_secs(20), "the bot never said {text:?}: {v}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn messages(who: &Person, space: &str) -> Vec<Value> {
    let v = who.ok(&["read", space, "--limit", "200"]);
    v["events"].as_array().unwrap().iter().filter(|e| e["kind"] == "message").cloned().collect()
}

#[test]
fn the_poll_bot_by_socket_and_webhook_until_the_org_revokes_it() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let bob = Person::login(&up, &people, "bob@acme.test");
    let space =
        alice.ok(&["space", "create", "Lunch", "--member", "bob@acme.test"])["id"].as_str().unwrap().to_string();
    // A member adds the bot like anyone else: KMS authorization and core membership.
    alice.ok(&["space", "add", &space, "pollbot@acme.test"]);

    // Socket mode.
    let bot = BotProcess::start(&up, "poll", 0, &[]);
    assert_eq!(bot.first_line["mode"], "socket");
    assert_eq!(bot.first_line["bot"], "pollbot@acme.test");
    alice.ok(&["send", &space, "/poll Lunch? | pizza | sushi"]);
    bot_says(&alice, &space, "Poll: Lunch?\n1) pizza\n2) sushi\nvote with /vote <number>");
    bob.ok(&["send", &space, "/vote 2"]);
    bot_says(&bob, &space, "vote counted: sushi");
    alice.ok(&["send", &space, "/vote 9"]);
    bot_says(&alice, &space, "vote with a number from 1 to 2");
    alice.ok(&["send", &space, "/results"]);
    bot_says(&alice, &space, "Lunch?: pizza 0, sushi 1");
    // It answers in the command's thread.
    let all = messages(&alice, &space);
    let results = all.iter().find(|e| e["text"] == "/results").unwrap();
    let answer = all.iter().find(|e| e["text"] == "Lunch?: pizza 0, sushi 1").unwrap();
    assert_eq!(answer["parent"], results["id"]);
    drop(bot);

    // Webhook mode: the core POSTs each event, signed; the bot verifies and answers.
    let bot = BotProcess::start(&up, "poll", 0, &["--webhook-listen", "127.0.0.1:0"]);
    assert_eq!(bot.first_line["mode"], "webhook");
    let url = bot.first_line["url"].as_str().unwrap().to_string();
    alice.ok(&["send", &space, "/poll Dinner? | tacos | ramen"]);
    bot_says(&alice, &space, "Poll: Dinner?\n1) tacos\n2) ramen\nvote with /vote <number>");
    bob.ok(&["send", &space, "/vote 1"]);
    bot_says(&bob, &space, "vote counted: tacos");
    // A forged request (no or a wrong signature) is refused, and nothing comes of it.
    let forged = reqwest::blocking::Client::new()
        .post(&url)
        .header("x-custos-request-timestamp", "1")
        .header("x-custos-signature", format!("v1={}", "0".repeat(64)))
        .body(r#"{"type":"event","event":{}}"#)
        .send()
        .unwrap();
    assert_eq!(forged.status().as_u16(), 401);
    let unsigned = reqwest::blocking::Client::new().post(&url).body("{}").send().unwrap();
    assert_eq!(unsigned.status().as_u16(), 401);

    // The org revokes the bot mid-conversation: it can no longer read, so it cannot answer.
    let before = messages(&alice, &space);
    let poll_key = before.iter().find(|e| e["text"] == "/poll Dinner? | tacos | ramen").unwrap()["key"].clone();
    alice.ok(&["kms", "admin", "service", "revoke", "pollbot@acme.test"]);
    std::thread::sleep(Duration::from_millis(1500));
    alice.ok(&["send", &space, "/results"]);
    std::thread::sleep(Duration::from_secs(6));
    let after = messages(&alice, &space);
    let from_bot = |v: &[Value]| v.iter().filter(|e| e["sender"] == "pollbot@acme.test").count();
    assert_eq!(from_bot(&after), from_bot(&before), "the revoked bot still answered: {after:?}");
    // What was sent after the revocation is under a key the bot never had.
    let last = after.iter().rev().find(|e| e["text"] == "/results").unwrap();
    assert_ne!(last["key"], poll_key, "no re-key after the revocation");
    let log = bot.log.lock().unwrap().clone();
    assert!(log.contains("a message the bot cannot read"), "bot log: {log}");
}
