//! The whole server side of an ECDHE handshake: classify, RSA-OAEP unwrap,
//! request parsing, P-256 key generation, ECDH + HKDF, PS256-signed response.

use criterion::{criterion_group, criterion_main, Criterion};
use jose::RsaPrivateKey;
use kms_protocol::channel::{HandshakeGrant, ServerKey};
use kms_protocol::{begin_handshake, classify, date, ClientInfo, Credential, Incoming, Kind, KmsUri};

fn bench(c: &mut Criterion) {
    let srv =
        ServerKey::new(RsaPrivateKey::generate(2048, Some("static".into())).unwrap(), "kms.bench.example").unwrap();
    let client = ClientInfo { client_id: "bench".into(), credential: Credential::bearer("t".repeat(800)) };
    let request = begin_handshake(&srv.info(), client).unwrap().wrapped;
    let grant = HandshakeGrant {
        user_id: "u@bench.example".into(),
        client_id: "bench".into(),
        expires: date::now() + time::Duration::hours(1),
    };
    let uri = KmsUri::object("kms.bench.example", Kind::Ecdhe, "session").unwrap();

    let mut g = c.benchmark_group("handshake");
    g.measurement_time(std::time::Duration::from_secs(5));
    g.bench_function("server_2048", |b| {
        b.iter(|| {
            let Incoming::Handshake(jwe) = classify(&request).unwrap() else { unreachable!() };
            let opened = srv.open_handshake(&jwe).unwrap();
            srv.accept_handshake(&opened, &grant, |_| Ok(uri.clone())).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
