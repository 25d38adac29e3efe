//! File previews end to end: `custos up` (which lists `previewer@acme.test`
//! as a preview service in acme's KMS policy and at the core), `custos bot
//! preview` as its own process. An uploaded image gets a thumbnail and a text
//! file an excerpt, both sealed and readable by members only; a kind it
//! cannot preview gets none; once the org revokes the service, new uploads
//! get no preview.

mod common;

use std::io::Cursor;
use std::time::{Duration, Instant};

use common::{free_base, BotProcess, Person, Up};

fn wait_preview(who: &Person, file: &str, args: &[&str]) -> serde_json::Value {
    let t = Instant::now();
    loop {
        let mut a = vec!["preview", file];
        a.extend_from_slice(args);
        let out = who.run(&a);
        if out.status.success() {
            return serde_json::from_slice(&out.stdout).unwrap();
        }
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(err.contains("no such preview"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(20), "no preview of {file}: {err}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn previews_of_images_and_text_until_the_org_revokes_the_service() {
    let tmp = tempfile::tempdir().unwrap();
    let up = Up::start(&tmp.path().join("up"), free_base());
    let people = tmp.path().join("people");
    let alice = Person::login(&up, &people, "alice@acme.test");
    let bob = Person::login(&up, &people, "bob@acme.test");
    let carol = Person::login(&up, &people, "carol@acme.test");
    let space =
        alice.ok(&["space", "create", "Design", "--member", "bob@acme.test"])["id"].as_str().unwrap().to_string();
    alice.ok(&["space", "add", &space, "previewer@acme.test"]);
    let previewer = BotProcess::start(&up, "preview", 3, &[]);
    assert_eq!(previewer.first_line["bot"], "previewer@acme.test");

    // An 800x600 image: a 256x192 PNG thumbnail.
    let img = image::RgbImage::from_fn(800, 600, |x, y| image::Rgb([(x % 256) as u8, (y % 256) as u8, 90]));
    let mut png = Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img).write_to(&mut png, image::ImageFormat::Png).unwrap();
    let photo = tmp.path().join("photo.png");
    std::fs::write(&photo, png.into_inner()).unwrap();
    let f1 = alice.ok(&["upload", &space, photo.to_str().unwrap()])["file"].as_str().unwrap().to_string();
    let thumb = tmp.path().join("thumb.png");
    let v = wait_preview(&bob, &f1, &["--out", thumb.to_str().unwrap()]);
    assert_eq!(v["kind"], "image");
    let t = image::open(&thumb).unwrap();
    assert_eq!((t.width(), t.height()), (256, 192));

    // A text file: its beginning.
    let notes = tmp.path().join("notes.txt");
    std::fs::write(&notes, "Kickoff notes: the palette is teal.\n".repeat(50)).unwrap();
    let f2 = alice.ok(&["upload", &space, notes.to_str().unwrap()])["file"].as_str().unwrap().to_string();
    let v = wait_preview(&bob, &f2, &[]);
    assert_eq!(v["kind"], "excerpt");
    assert!(v["text"].as_str().unwrap().starts_with("Kickoff notes: the palette is teal."));
    assert_eq!(v["text"].as_str().unwrap().chars().count(), 500);
    // Carol is not a member: no preview for her.
    assert!(!carol.run(&["preview", &f2]).status.success());

    // A binary it cannot preview: none, ever.
    let blob = tmp.path().join("data.bin");
    std::fs::write(&blob, [0u8, 159, 146, 150, 0, 1, 2, 3].repeat(100)).unwrap();
    let f3 = alice.ok(&["upload", &space, blob.to_str().unwrap()])["file"].as_str().unwrap().to_string();

    // The org revokes the service: the next image gets no preview.
    alice.ok(&["kms", "admin", "service", "revoke", "previewer@acme.test"]);
    std::thread::sleep(Duration::from_millis(1500));
    let f4 = alice.ok(&["upload", &space, photo.to_str().unwrap()])["file"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_secs(6));
    for f in [&f3, &f4] {
        let err = String::from_utf8_lossy(&bob.run(&["preview", f]).stderr).to_string();
        assert!(err.contains("no such preview"), "{f}: {err}");
    }
    let log = previewer.log.lock().unwrap().clone();
    assert!(log.contains("a message the bot cannot read") || log.contains("not authorized"), "previewer log: {log}");
}
