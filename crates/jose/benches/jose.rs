//! Benchmarks for the jose crate.
//!
//! Group and function ids are fixed so that scripts can read
//! `target/criterion/<group>/<id>/new/estimates.json`:
//!
//! - `jwe_dir/encrypt_512`, `jwe_dir/decrypt_512`, `jwe_dir/encrypt_1024`,
//!   `jwe_dir/decrypt_1024`: `dir` + `A256GCM` with a payload of that many bytes
//!   (throughput in bytes). `decrypt_*` is `Jwe::parse` + `Jwe::decrypt`, what a
//!   receiver does with a compact string.
//! - `rsa/oaep_unwrap_2048`: `Jwe::parse` + `Jwe::decrypt` of an `RSA-OAEP` JWE
//!   (32-byte CEK, 16-byte payload) with a 2048-bit key: dominated by the RSA
//!   private-key operation.
//! - `rsa/ps256_sign_2048`: `jws::sign` with `PS256` and a 2048-bit key over a
//!   small payload.
//!
//! Run with `cargo bench -p jose --bench jose`; the whole run takes well under a minute.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use jose::jwe::{self, DecryptKey, EncryptKey};
use jose::jws::{self, SignKey};
use jose::{ContentEnc, HeaderParams, Jwe, JwePolicy, OctKey, RsaPrivateKey, SigAlg};

/// A test-only RSA-2048 key (the one the integration tests use).
const RSA_PEM: &str = include_str!("../tests/fixtures/rsa2048_pkcs8.pem");

fn jwe_dir(c: &mut Criterion) {
    let key = OctKey::new((0u8..32).collect(), Some("bench".into())).unwrap();
    let params = HeaderParams::kid("bench");
    let mut g = c.benchmark_group("jwe_dir");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for size in [512usize, 1024] {
        let payload: Vec<u8> = (0..size).map(|i| i as u8).collect();
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("encrypt_{size}"), |b| {
            b.iter(|| jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &params, black_box(&payload)).unwrap())
        });
        let compact = jwe::encrypt(EncryptKey::Dir(&key), ContentEnc::A256Gcm, &params, &payload).unwrap();
        g.bench_function(format!("decrypt_{size}"), |b| {
            b.iter(|| Jwe::parse(black_box(&compact), &JwePolicy::DIR).unwrap().decrypt(DecryptKey::Dir(&key)).unwrap())
        });
    }
    g.finish();
}

fn rsa(c: &mut Criterion) {
    let sk = RsaPrivateKey::from_pem(RSA_PEM, Some("bench".into())).unwrap();
    assert_eq!(sk.public_key().bits(), 2048);
    let mut g = c.benchmark_group("rsa");
    // RSA private operations take around a millisecond: fewer samples keep the run short.
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3)).sample_size(30);
    let compact = jwe::encrypt(
        EncryptKey::RsaOaep(sk.public_key()),
        ContentEnc::A256Gcm,
        &HeaderParams::kid("bench"),
        &[7u8; 16],
    )
    .unwrap();
    g.bench_function("oaep_unwrap_2048", |b| {
        b.iter(|| {
            Jwe::parse(black_box(&compact), &JwePolicy::RSA_OAEP).unwrap().decrypt(DecryptKey::RsaOaep(&sk)).unwrap()
        })
    });
    let params = HeaderParams::kid("bench");
    g.bench_function("ps256_sign_2048", |b| {
        b.iter(|| jws::sign(SigAlg::PS256, SignKey::Rsa(&sk), &params, black_box(b"{\"op\":\"unwrap\"}")).unwrap())
    });
    g.finish();
}

criterion_group!(benches, jwe_dir, rsa);
criterion_main!(benches);
