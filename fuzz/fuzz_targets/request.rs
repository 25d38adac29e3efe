//! KMS request decoding: the JSON payload through `Request::from_json` and
//! `operation` (every URI in a typed operation must be canonical), and the
//! input as a compact message through `classify` and, for session messages,
//! `open_request` with a fixed key.
#![no_main]

use kms_protocol::message::{Operation, Realm};
use kms_protocol::{classify, open_request, Incoming, Kind, KmsUri, Request};
use libfuzzer_sys::fuzz_target;

const REALM: Realm<'static> = Realm { kms_domain: "kms.fuzz.example", org_domain: "fuzz.example" };

fn canonical(u: &KmsUri) {
    assert_eq!(&KmsUri::parse_absolute(&u.to_string()).expect("own URI parses"), u);
}

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = Request::from_json(data) {
        // Serialization round trip of whatever parsed.
        let again = Request::from_json(&req.to_json()).expect("own JSON parses");
        assert_eq!(again, req);
        if let Ok(op) = req.operation(REALM) {
            match &op {
                Operation::DeleteEphemeralKey { uri } | Operation::RetrieveResource { uri } | Operation::RetrieveKey { uri } => canonical(uri),
                Operation::BindKey { key, resource } => {
                    canonical(key);
                    canonical(resource);
                    assert!(key.is_object(Kind::Keys) && resource.is_object(Kind::Resources));
                }
                Operation::CreateKeys { count } => assert!((1..=1000).contains(count)),
                _ => {}
            }
        }
    }
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(Incoming::Session { kid: _, jwe }) = classify(s) {
            let key = jose::OctKey::new(vec![7u8; 32], None).unwrap();
            let uri = KmsUri::object("kms.fuzz.example", Kind::Ecdhe, "s").unwrap();
            let _ = open_request(&key, &uri, &jwe);
        }
    }
});
