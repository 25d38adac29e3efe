//! Memory behaviour: a 200 MB stream through both adapters keeps O(segment)
//! heap, and the segment API does not allocate in steady state.
//!
//! A counting global allocator keeps per-thread figures (each test runs on its
//! own thread). It sees Rust allocations only; aws-lc's own `malloc`s are not
//! counted (it does not allocate per segment for AES-GCM).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::{self, Read, Write};

use filecrypt::{DecryptingWriter, Decryptor, EncryptingReader, Encryptor, FileKey, DEFAULT_SEGMENT, TAG_LEN};

struct Counting;

#[derive(Clone, Copy, Default)]
struct Stats {
    live: isize,
    peak: isize,
    allocs: usize,
}

thread_local! {
    static STATS: Cell<Stats> = const { Cell::new(Stats { live: 0, peak: 0, allocs: 0 }) };
}

fn record(delta: isize, new_alloc: bool) {
    let _ = STATS.try_with(|s| {
        let mut v = s.get();
        v.live += delta;
        v.peak = v.peak.max(v.live);
        v.allocs += usize::from(new_alloc);
        s.set(v);
    });
}

// SAFETY: forwards every call to `System` unchanged; the bookkeeping does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            record(l.size() as isize, true);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(l) };
        if !p.is_null() {
            record(l.size() as isize, true);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        record(-(l.size() as isize), false);
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            record(new as isize - l.size() as isize, true);
        }
        q
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Resets the peak to the current live figure and returns (live, allocs) now.
fn mark() -> Stats {
    STATS.with(|s| {
        let mut v = s.get();
        v.peak = v.live;
        s.set(v);
        v
    })
}

fn since(m: Stats) -> (isize, usize) {
    let v = STATS.with(|s| s.get());
    (v.peak - m.live, v.allocs - m.allocs)
}

/// Byte `p` of the test stream: a fixed random block of prime length, with the
/// block number mixed in, so segments are neither periodic nor aligned to it.
const BLOCK: usize = 65_521;

struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    fn new() -> Pattern {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let block = (0..BLOCK)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        Pattern { block }
    }

    fn fill(&self, pos: u64, out: &mut [u8]) {
        let mut p = pos;
        let mut o = 0;
        while o < out.len() {
            let i = (p % BLOCK as u64) as usize;
            let n = (BLOCK - i).min(out.len() - o);
            let k = (p / BLOCK as u64) as u8;
            for (d, s) in out[o..o + n].iter_mut().zip(&self.block[i..i + n]) {
                *d = s ^ k;
            }
            o += n;
            p += n as u64;
        }
    }
}

/// Produces `len` bytes of the pattern.
struct Source<'a> {
    pat: &'a Pattern,
    pos: u64,
    len: u64,
}

impl Read for Source<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        let n = (out.len() as u64).min(self.len - self.pos) as usize;
        self.pat.fill(self.pos, &mut out[..n]);
        self.pos += n as u64;
        Ok(n)
    }
}

/// Checks that what is written is the pattern, without keeping it.
struct Check<'a> {
    pat: &'a Pattern,
    pos: u64,
    scratch: Vec<u8>,
}

impl Write for Check<'_> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = data.len().min(self.scratch.len());
        self.pat.fill(self.pos, &mut self.scratch[..n]);
        assert!(data[..n] == self.scratch[..n], "plaintext differs at {}", self.pos);
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn stream_through_adapters(len: u64, segment: usize) -> (isize, usize) {
    let pat = Pattern::new();
    let key = FileKey::generate();
    let mut copy_buf = vec![0u8; 8192];
    let check = Check { pat: &pat, pos: 0, scratch: vec![0; 1 << 16] };
    let m = mark();
    let mut r = EncryptingReader::new(Source { pat: &pat, pos: 0, len }, &key, segment).unwrap();
    let mut w = DecryptingWriter::new(check, &key);
    let mut ct_len = 0u64;
    loop {
        let n = r.read(&mut copy_buf).unwrap();
        if n == 0 {
            break;
        }
        ct_len += n as u64;
        w.write_all(&copy_buf[..n]).unwrap();
    }
    let check = w.finish().unwrap();
    drop(r);
    let used = since(m);
    assert_eq!(check.pos, len);
    assert_eq!(ct_len, filecrypt::ciphertext_len(len, segment));
    used
}

#[test]
fn large_stream_has_bounded_memory() {
    let (peak, allocs) = stream_through_adapters(200_000_000, DEFAULT_SEGMENT);
    eprintln!("200 MB through both adapters: peak heap {peak} bytes, {allocs} allocations");
    // Reader: segment + tag; writer: segment + tag of ciphertext and segment of plaintext.
    let bound = 3 * (DEFAULT_SEGMENT + TAG_LEN) as isize + 16 * 1024;
    assert!(peak <= bound, "peak heap {peak} bytes for 200 MB, bound {bound}");
    // A handful of allocations (the writer's buffers grow geometrically), not one per segment (3052).
    assert!(allocs < 64, "{allocs} allocations");
}

#[test]
fn memory_scales_with_the_segment_not_the_file() {
    let seg = 1 << 20;
    let (peak, _) = stream_through_adapters(24_000_000, seg);
    assert!(peak >= 2 * seg as isize, "accounting sees the buffers ({peak})");
    assert!(peak <= 3 * (seg + TAG_LEN) as isize + 16 * 1024, "peak {peak}");
}

#[test]
fn segment_api_does_not_allocate_in_steady_state() {
    let key = FileKey::generate();
    let seg = 16 * 1024;
    let (mut enc, header) = Encryptor::new(&key, seg).unwrap();
    let mut dec = Decryptor::new(&key, &header).unwrap();
    let mut buf = Vec::with_capacity(seg + TAG_LEN);
    let m = mark();
    for i in 0..200u32 {
        let last = i == 199;
        buf.clear();
        buf.resize(if last { 100 } else { seg }, i as u8);
        enc.seal_segment(&mut buf, last).unwrap();
        dec.open_segment(&mut buf, last).unwrap();
        assert!(buf.iter().all(|&b| b == i as u8));
    }
    assert_eq!(since(m).1, 0, "allocations while sealing and opening");
    dec.finish().unwrap();

    // Without spare capacity, sealing reserves the tag's room itself.
    let (mut enc, _) = Encryptor::new(&key, seg).unwrap();
    let mut buf = vec![0u8; seg];
    enc.seal_segment(&mut buf, false).unwrap();
    assert_eq!(buf.len(), seg + TAG_LEN);
}

#[test]
fn reader_does_not_allocate_after_new() {
    let key = FileKey::generate();
    let input = vec![7u8; 1 << 20];
    let mut out = vec![0u8; 10_000];
    let mut r = EncryptingReader::new(&input[..], &key, 4096).unwrap();
    let m = mark();
    while r.read(&mut out).unwrap() != 0 {}
    assert_eq!(since(m).1, 0);
}
