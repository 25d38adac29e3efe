//! Every operation of the draft, as real clients write it, and the requests that name none.

use kms_protocol::message::{CmkWrapAlg, KeyState, Operation, Realm};
use kms_protocol::{AuthId, Kind, KmsUri, ProtocolError, Request, Response, Status, Target};
use serde_json::json;

const REALM: Realm<'static> = Realm { kms_domain: "kms.acme.example", org_domain: "acme.example" };

fn op(v: serde_json::Value) -> Result<Operation, ProtocolError> {
    let mut v = v;
    v["requestId"] = json!("r1");
    v["client"] = json!({"clientId": "c", "credential": {"bearer": "t"}});
    Request::from_json(v.to_string().as_bytes())?.operation(REALM)
}

fn uri(s: &str) -> KmsUri {
    KmsUri::parse(s, REALM.kms_domain).unwrap()
}

fn user(s: &str) -> AuthId {
    AuthId::User(s.into())
}

#[test]
fn application_api() {
    let ec = jose::EcPrivateKey::generate(None).unwrap();
    let jwk = serde_json::to_value(ec.to_jwk()).unwrap(); // with d, as node-kms sends it
    assert_eq!(
        op(json!({"method": "create", "uri": "/ecdhe", "jwk": jwk})).unwrap(),
        Operation::CreateEphemeralKey { jwk: ec.public_key().clone() }
    );
    assert_eq!(
        op(json!({"method": "delete", "uri": "/ecdhe/abc"})).unwrap(),
        Operation::DeleteEphemeralKey { uri: uri("kms://kms.acme.example/ecdhe/abc") }
    );
    // Draft example shape, with relative keys and bare user ids.
    assert_eq!(
        op(json!({"method": "create", "uri": "/resources", "authIds": ["carol", "bob@Other.Example", "bob@other.example"],
                  "keyUris": ["/keys/k1", "kms://kms.acme.example/keys/k2", "/keys/k1"], "ttl": 604800})).unwrap(),
        Operation::CreateResource {
            auth_ids: vec![user("bob@other.example"), user("carol@acme.example")],
            key_uris: vec![uri("/keys/k1"), uri("/keys/k2")],
            anonymous: 0,
            ttl: Some(604800),
        }
    );
    // The production client's `userIds`, and a resource URI as an authId.
    assert_eq!(
        op(json!({"method": "create", "uri": "/resources", "userIds": ["kms://kms.acme.example/resources/r0"], "keyUris": []})).unwrap(),
        Operation::CreateResource { auth_ids: vec![AuthId::Resource(uri("/resources/r0"))], key_uris: vec![], anonymous: 0, ttl: None }
    );
    assert_eq!(
        op(json!({"method": "retrieve", "uri": "kms://kms.acme.example/resources/r1"})).unwrap(),
        Operation::RetrieveResource { uri: uri("/resources/r1") }
    );
    assert_eq!(
        op(json!({"method": "create", "uri": "/keys", "count": 10})).unwrap(),
        Operation::CreateKeys { count: 10 }
    );
    assert_eq!(
        op(json!({"method": "update", "uri": "kms://kms.acme.example/keys/k1", "resourceUri": "/resources/r1"}))
            .unwrap(),
        Operation::BindKey { key: uri("/keys/k1"), resource: uri("/resources/r1") }
    );
    assert_eq!(
        op(json!({"method": "retrieve", "uri": "/keys/k1"})).unwrap(),
        Operation::RetrieveKey { uri: uri("/keys/k1") }
    );
    // Another KMS's key: parsed, for the engine to ask that KMS (federation).
    let foreign = KmsUri::parse_absolute("kms://kms.other.example/keys/k1").unwrap();
    assert_eq!(
        op(json!({"method": "retrieve", "uri": "kms://kms.other.example/keys/k1"})).unwrap(),
        Operation::RetrieveKey { uri: foreign }
    );
    let after = kms_protocol::date::parse("2015-01-11T18:23:21Z").unwrap();
    assert_eq!(
        op(json!({"method": "retrieve", "uri": "/resources/r1/keys", "boundAfter": "2015-01-11T18:23:21Z", "count": 25})).unwrap(),
        Operation::RetrieveResourceKeys { resource: uri("/resources/r1"), bound_after: Some(after), bound_before: None, count: Some(25) }
    );
    assert_eq!(
        op(json!({"method": "create", "uri": "/authorizations", "resourceUri": "/resources/r1", "authIds": ["dave"], "anonymous": 1})).unwrap(),
        Operation::CreateAuthorizations { resource: uri("/resources/r1"), auth_ids: vec![user("dave@acme.example")], anonymous: 1, role_uri: None }
    );
    // Anonymous only, given as a boolean.
    assert_eq!(
        op(json!({"method": "create", "uri": "/authorizations", "resourceUri": "/resources/r1", "anonymous": true}))
            .unwrap(),
        Operation::CreateAuthorizations {
            resource: uri("/resources/r1"),
            auth_ids: vec![],
            anonymous: 1,
            role_uri: None
        }
    );
    assert_eq!(
        op(json!({"method": "retrieve", "uri": "/resources/r1/authorizations"})).unwrap(),
        Operation::RetrieveAuthorizations { resource: uri("/resources/r1"), auth_id: None }
    );
    assert_eq!(
        op(json!({"method": "retrieve", "uri": "/resources/r1/authorizations?authId=dave%40acme.example"})).unwrap(),
        Operation::RetrieveAuthorizations { resource: uri("/resources/r1"), auth_id: Some(user("dave@acme.example")) }
    );
    assert_eq!(
        op(json!({"method": "delete", "uri": "/authorizations/a1"})).unwrap(),
        Operation::DeleteAuthorization { uri: uri("/authorizations/a1") }
    );
    assert_eq!(
        op(json!({"method": "delete", "uri": "kms://kms.acme.example/resources/r1/authorizations?authId=dave"}))
            .unwrap(),
        Operation::DeleteAuthorizationByAuthId { resource: uri("/resources/r1"), auth_id: user("dave@acme.example") }
    );
    assert_eq!(
        op(
            json!({"method": "delete", "uri": "/authorizations", "resourceUri": "/resources/r1", "authIds": ["a", "b"]})
        )
        .unwrap(),
        Operation::DeleteAuthorizations {
            resource: uri("/resources/r1"),
            auth_ids: vec![user("a@acme.example"), user("b@acme.example")]
        }
    );
    assert_eq!(op(json!({"method": "update", "uri": "/ping"})).unwrap(), Operation::Ping);
}

#[test]
fn administrative_api() {
    assert_eq!(
        op(json!({"method": "retrieve", "uri": "/publicKey", "assignedOrgId": "o1"})).unwrap(),
        Operation::RetrievePublicKey
    );
    assert_eq!(
        op(json!({"method": "create", "uri": "/cmk", "assignedOrgId": "o1", "customerMasterKey": "d3JhcHBlZA=="}))
            .unwrap(),
        Operation::CreateCmk {
            customer_master_key: Some("d3JhcHBlZA==".into()),
            alg: CmkWrapAlg::RsaOaep,
            backup: None,
            assigned_org_id: Some("o1".into())
        }
    );
    // Without a wrapped key: generate one in the backend; the wrapping algorithm is checked.
    assert_eq!(
        op(json!({"method": "create", "uri": "/cmk"})).unwrap(),
        Operation::CreateCmk {
            customer_master_key: None,
            alg: CmkWrapAlg::RsaOaep,
            backup: None,
            assigned_org_id: None
        }
    );
    assert!(matches!(
        op(
            json!({"method": "create", "uri": "/cmk", "customerMasterKey": "eA", "customerMasterKeyAlg": "RSA-OAEP-256"})
        ),
        Ok(Operation::CreateCmk { alg: CmkWrapAlg::RsaOaep256, .. })
    ));
    assert!(matches!(
        op(json!({"method": "create", "uri": "/cmk", "customerMasterKey": "eA", "customerMasterKeyAlg": "RSA1_5"})),
        Err(ProtocolError::InvalidField { field: "customerMasterKeyAlg", .. })
    ));
    assert_eq!(
        op(json!({"method": "retrieve", "uri": "/kek"})).unwrap(),
        Operation::ListMasterKeys { kind: Kind::Kek, assigned_org_id: None }
    );
    assert_eq!(op(json!({"method": "create", "uri": "/kek"})).unwrap(), Operation::CreateKek { assigned_org_id: None });
    assert_eq!(
        op(json!({"method": "update", "uri": "kms://kms.acme.example/cmk/c1", "keyState": "REVOKED"})).unwrap(),
        Operation::UpdateMasterKey { uri: uri("/cmk/c1"), state: KeyState::Revoked }
    );
}

/// A refusal case: its name, the request, and what the error must be.
type Case = (&'static str, serde_json::Value, fn(&ProtocolError) -> bool);

#[test]
fn refusals() {
    use ProtocolError as E;
    let cases: Vec<Case> = vec![
        ("unknown method", json!({"method": "patch", "uri": "/keys"}), |e| {
            matches!(e, E::Jose(jose::Error::Json { .. }))
        }),
        ("retrieve /ecdhe", json!({"method": "retrieve", "uri": "/ecdhe"}), |e| {
            matches!(e, E::UnknownOperation { .. })
        }),
        ("delete a key", json!({"method": "delete", "uri": "/keys/k1"}), |e| matches!(e, E::UnknownOperation { .. })),
        ("create keys without count", json!({"method": "create", "uri": "/keys"}), |e| *e == E::MissingField("count")),
        ("zero keys", json!({"method": "create", "uri": "/keys", "count": 0}), |e| {
            matches!(e, E::InvalidField { field: "count", .. })
        }),
        ("too many keys", json!({"method": "create", "uri": "/keys", "count": 1001}), |e| {
            matches!(e, E::InvalidField { field: "count", .. })
        }),
        ("negative count", json!({"method": "create", "uri": "/keys", "count": -1}), |e| {
            matches!(e, E::Jose(jose::Error::Json { .. }))
        }),
        ("count as string", json!({"method": "create", "uri": "/keys", "count": "5"}), |e| {
            matches!(e, E::Jose(jose::Error::Json { .. }))
        }),
        ("bind without resource", json!({"method": "update", "uri": "/keys/k1"}), |e| {
            *e == E::MissingField("resourceUri")
        }),
        ("bind to a key", json!({"method": "update", "uri": "/keys/k1", "resourceUri": "/keys/k2"}), |e| {
            matches!(e, E::InvalidField { field: "resourceUri", .. })
        }),
        ("bind to a bad uri", json!({"method": "update", "uri": "/keys/k1", "resourceUri": "resources/r1"}), |e| {
            matches!(e, E::Uri { field: "resourceUri", .. })
        }),
        // Another KMS's objects may be named (federation); its collections and the rest may not.
        (
            "foreign KMS collection",
            json!({"method": "create", "uri": "kms://kms.other.example/keys", "count": 1}),
            |e| matches!(e, E::ForeignDomain(_)),
        ),
        ("foreign KMS policy", json!({"method": "retrieve", "uri": "kms://kms.other.example/policy"}), |e| {
            matches!(e, E::ForeignDomain(_))
        }),
        (
            "resource with a non-key",
            json!({"method": "create", "uri": "/resources", "keyUris": ["/resources/r"]}),
            |e| matches!(e, E::InvalidField { field: "keyUris", .. }),
        ),
        (
            "authIds and userIds",
            json!({"method": "create", "uri": "/resources", "authIds": ["a"], "userIds": ["b"]}),
            |e| matches!(e, E::InvalidField { field: "authIds", .. }),
        ),
        ("authId with two @", json!({"method": "create", "uri": "/resources", "authIds": ["a@b@c"]}), |e| {
            matches!(e, E::InvalidField { field: "authIds", .. })
        }),
        ("authId with a space", json!({"method": "create", "uri": "/resources", "authIds": ["a b"]}), |e| {
            matches!(e, E::InvalidField { field: "authIds", .. })
        }),
        ("authId URI of a key", json!({"method": "create", "uri": "/resources", "authIds": ["/keys/k"]}), |e| {
            matches!(e, E::InvalidField { field: "authIds", .. })
        }),
        (
            "empty authorizations",
            json!({"method": "create", "uri": "/authorizations", "resourceUri": "/resources/r", "authIds": []}),
            |e| matches!(e, E::InvalidField { field: "authIds", .. }),
        ),
        (
            "authorizations without resource",
            json!({"method": "create", "uri": "/authorizations", "authIds": ["a"]}),
            |e| *e == E::MissingField("resourceUri"),
        ),
        (
            "too many anonymous",
            json!({"method": "create", "uri": "/authorizations", "resourceUri": "/resources/r", "anonymous": 11}),
            |e| matches!(e, E::InvalidField { field: "anonymous", .. }),
        ),
        (
            "bulk delete without ids",
            json!({"method": "delete", "uri": "/authorizations", "resourceUri": "/resources/r"}),
            |e| *e == E::MissingField("authIds"),
        ),
        (
            "inverted bound range",
            json!({"method": "retrieve", "uri": "/resources/r/keys", "boundAfter": "2020-01-02T00:00:00Z", "boundBefore": "2020-01-01T00:00:00Z"}),
            |e| matches!(e, E::InvalidField { field: "boundBefore", .. }),
        ),
        ("bad date", json!({"method": "retrieve", "uri": "/resources/r/keys", "boundAfter": "yesterday"}), |e| {
            matches!(e, E::Jose(jose::Error::Json { .. }))
        }),
        ("ecdhe without jwk", json!({"method": "create", "uri": "/ecdhe"}), |e| *e == E::MissingField("jwk")),
        (
            "ecdhe with an RSA jwk",
            json!({"method": "create", "uri": "/ecdhe", "jwk": {"kty": "RSA", "n": "AQAB", "e": "AQAB"}}),
            |e| matches!(e, E::Jose(jose::Error::WrongKeyType { .. })),
        ),
        (
            "ecdhe with an off-curve point",
            json!({"method": "create", "uri": "/ecdhe", "jwk": {"kty": "EC", "crv": "P-256", "x": jose::b64::encode([1u8; 32]), "y": jose::b64::encode([2u8; 32])}}),
            |e| matches!(e, E::Jose(jose::Error::InvalidKey(_))),
        ),
        ("cmk state unknown", json!({"method": "update", "uri": "/cmk/c1", "keyState": "MELTED"}), |e| {
            matches!(e, E::Jose(jose::Error::Json { .. }))
        }),
        ("cmk without state", json!({"method": "update", "uri": "/cmk/c1"}), |e| *e == E::MissingField("keyState")),
    ];
    for (name, v, ok) in &cases {
        let err = op(v.clone()).unwrap_err();
        assert!(ok(&err), "{name}: unexpected error {err:?}");
    }
    assert!(cases.len() >= 28);

    // Envelope-level refusals.
    let e = Request::from_json(br#"{"method":"update","uri":"/ping","requestId":""}"#).unwrap_err();
    assert!(matches!(e, ProtocolError::InvalidField { field: "requestId", .. }));
    let e = Request::from_json(br#"{"method":"update","uri":"/ping","requestId":"a","requestId":"b"}"#).unwrap_err();
    assert!(matches!(e, ProtocolError::Jose(jose::Error::DuplicateMember { .. })));
    let e = Request::from_json(br#"{"method":"update","uri":"/ping"}"#).unwrap_err();
    assert!(matches!(e, ProtocolError::Jose(jose::Error::Json { .. })));
    // A token never appears in a parse error.
    let e = Request::from_json(br#"{"method":"update","uri":"/ping","requestId":"a","client":{"clientId":"c","credential":{"bearer":42}},"x":"eyJsecret"}"#);
    if let Err(e) = e {
        assert!(!e.to_string().contains("eyJsecret"));
    }
    let e = Request::from_json(br#"{"method":"eyJsecretmethod","uri":"/ping","requestId":"a"}"#).unwrap_err();
    assert!(!e.to_string().contains("eyJsecretmethod"), "{e}");
}

#[test]
fn responses_round_trip_and_map_errors() {
    let r = Response::error(Status::FORBIDDEN, "r1", "not authorized");
    let back = Response::from_json(&r.to_json()).unwrap();
    assert_eq!(back, r);
    assert_eq!(
        back.into_success().unwrap_err(),
        ProtocolError::Status { status: Status::FORBIDDEN, reason: "not authorized".into() }
    );
    // The production KMS adds members we do not know (statusCode, errorCode): tolerated.
    let r = Response::from_json(br#"{"status":404,"requestId":"r","reason":"x","errorCode":30005,"statusCode":404}"#)
        .unwrap();
    assert_eq!(r.status, Status::NOT_FOUND);
    assert_eq!(
        KmsUri::parse_absolute("kms://kms.acme.example/resources/r1/keys").unwrap().target(),
        &Target::ResourceKeys("r1".into())
    );
}
