//! Benchmarks for filecrypt.
//!
//! Group and function ids are fixed so that scripts can read
//! `target/criterion/<group>/<id>/new/estimates.json` (`scripts/bench` does):
//!
//! - `filecrypt/seal_16384`, `filecrypt/seal_65536`: [`Encryptor::seal_segment`]
//!   of one non-final segment of that many bytes in a reused buffer, what the
//!   SDK's async upload loop does per segment (throughput in plaintext bytes).
//! - `filecrypt/open_65536`: [`Decryptor::open_segment`] of a 64 KiB segment.
//! - `filecrypt/reader_16MiB`, `filecrypt/reader_16MiB_seg16384`:
//!   [`EncryptingReader`] over a 16 MiB in-memory file with 64 KiB / 16 KiB
//!   segments, read out in 64 KiB pieces: the whole blocking encryption path
//!   including the copies in and out.
//! - `filecrypt/writer_16MiB`: the 16 MiB stream (64 KiB segments) written to a
//!   [`DecryptingWriter`] in 64 KiB pieces, plaintext into a reused `Vec`.
//!
//! Run with `cargo bench -p filecrypt --bench filecrypt`; the run takes about half a minute.

use std::hint::black_box;
use std::io::{Read, Write};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use filecrypt::{DecryptingWriter, Decryptor, EncryptingReader, Encryptor, FileKey, TAG_LEN};

const FILE: usize = 16 << 20;

fn segments(c: &mut Criterion) {
    let key = FileKey::generate();
    let mut g = c.benchmark_group("filecrypt");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    for seg in [16384usize, 65536] {
        g.throughput(Throughput::Bytes(seg as u64));
        // 2^32 segments would take hours at these sizes; one encryptor is enough.
        let (mut enc, _) = Encryptor::new(&key, seg).unwrap();
        let mut buf = Vec::with_capacity(seg + TAG_LEN);
        buf.resize(seg, 0x5a);
        g.bench_function(format!("seal_{seg}"), |b| {
            b.iter(|| {
                buf.truncate(seg);
                enc.seal_segment(black_box(&mut buf), false).unwrap();
            })
        });
    }
    {
        let seg = 65536;
        g.throughput(Throughput::Bytes(seg as u64));
        let (mut enc, header) = Encryptor::new(&key, seg).unwrap();
        let mut sealed = vec![0x5a; seg];
        enc.seal_segment(&mut sealed, false).unwrap();
        let mut buf = Vec::with_capacity(seg + TAG_LEN);
        g.bench_function("open_65536", |b| {
            b.iter(|| {
                // A fresh decryptor each time: segment 0 is the only one we have.
                let mut dec = Decryptor::new(&key, &header).unwrap();
                buf.clear();
                buf.extend_from_slice(&sealed);
                dec.open_segment(black_box(&mut buf), false).unwrap();
            })
        });
    }
    g.finish();
}

fn adapters(c: &mut Criterion) {
    let key = FileKey::generate();
    let file: Vec<u8> = (0..FILE).map(|i| (i as u32).wrapping_mul(2654435761) as u8).collect();
    let mut g = c.benchmark_group("filecrypt");
    g.warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(4)).sample_size(20);
    g.throughput(Throughput::Bytes(FILE as u64));
    let mut out = vec![0u8; 64 * 1024];
    for (id, seg) in [("reader_16MiB", 65536usize), ("reader_16MiB_seg16384", 16384)] {
        g.bench_function(id, |b| {
            b.iter(|| {
                let mut r = EncryptingReader::new(black_box(&file[..]), &key, seg).unwrap();
                let mut total = 0;
                loop {
                    let n = r.read(&mut out).unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n;
                }
                black_box(total)
            })
        });
    }
    let mut ct = Vec::new();
    EncryptingReader::new(&file[..], &key, 65536).unwrap().read_to_end(&mut ct).unwrap();
    let mut plain = Vec::with_capacity(FILE);
    g.bench_function("writer_16MiB", |b| {
        b.iter(|| {
            plain.clear();
            let mut w = DecryptingWriter::new(&mut plain, &key);
            for piece in ct.chunks(64 * 1024) {
                w.write_all(black_box(piece)).unwrap();
            }
            w.finish().unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, segments, adapters);
criterion_main!(benches);
