//! Conformance suite: every scenario runs against `InProcessBus` and against
//! `NatsBus` (two connections = two nodes, a unique subject prefix per test).
//! NATS at `CUSTOS_TEST_NATS_URL` (default `nats://127.0.0.1:4222`); when it is
//! unreachable the NATS variants print `SKIPPED (...)` and pass, unless `CI` is set.

mod common;

use std::sync::Arc;

use common::*;
use core_bus::{BusError, EventBus, InProcessBus, NatsBus};
use tokio::sync::mpsc;

/// One node of a test cluster.
#[derive(Clone)]
enum Node {
    InProcess(InProcessBus),
    Nats(NatsBus),
}

impl Node {
    fn bus(&self) -> Arc<dyn EventBus> {
        match self {
            Node::InProcess(b) => Arc::new(b.clone()),
            Node::Nats(b) => Arc::new(b.clone()),
        }
    }
    fn active_spaces(&self) -> usize {
        match self {
            Node::InProcess(b) => b.active_spaces(),
            Node::Nats(b) => b.active_spaces(),
        }
    }
}

/// Two nodes, plus (for NATS) a raw client and the subject of a space.
struct Cluster {
    a: Node,
    b: Node,
    raw: Option<(async_nats::Client, NatsBus)>,
}

fn in_process() -> Cluster {
    // The embedded bus is a single process: both "nodes" share it.
    let bus = InProcessBus::new();
    Cluster { a: Node::InProcess(bus.clone()), b: Node::InProcess(bus), raw: None }
}

async fn nats(test: &str) -> Option<Cluster> {
    let url = nats_url();
    let prefix = unique_prefix();
    let connected = async {
        let a = NatsBus::connect(&url, &prefix).await?;
        let b = NatsBus::connect(&url, &prefix).await?;
        let raw = async_nats::connect(url.as_str()).await.map_err(BusError::Connect)?;
        Ok::<_, BusError>((a, b, raw))
    }
    .await;
    match connected {
        Ok((a, b, raw)) => Some(Cluster { a: Node::Nats(a.clone()), b: Node::Nats(b), raw: Some((raw, a)) }),
        Err(e) => {
            skip_or_fail(&format!("no NATS at {url}"), test, &e);
            None
        }
    }
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod in_process {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::in_process()).await
                }
            )*
        }
        mod nats {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if let Some(cluster) = super::nats(concat!("nats::", stringify!($name))).await {
                        super::$name(cluster).await
                    }
                }
            )*
        }
    };
}

conformance!(
    right_space_only,
    two_nodes,
    unsubscribe_on_drop,
    many_spaces_many_subscribers,
    slow_subscriber_does_not_block_fast,
    malformed_notices_dropped,
    ordering_per_space,
);

async fn right_space_only(c: Cluster) {
    let bus = c.a.bus();
    let mut s1 = bus.subscribe("space-1").await.unwrap();
    let mut s2 = bus.subscribe("space-2").await.unwrap();
    assert_eq!(s1.space_id(), "space-1");
    bus.publish(notice("space-1", 1)).await.unwrap();
    assert_eq!(recv(&mut s1).await, notice("space-1", 1));
    assert_silent(&mut s2, 300).await;
    // A space with no subscribers: publishing is fine, nobody hears it.
    bus.publish(notice("space-3", 1)).await.unwrap();
    assert_silent(&mut s1, 200).await;
    assert_silent(&mut s2, 0).await;
    // Invalid input is rejected up front.
    for bad in ["", "a.b", "a*", "a>", "a b", "ä"] {
        assert!(matches!(bus.subscribe(bad).await, Err(BusError::InvalidNotice(_))), "{bad:?}");
    }
    let invalid = core_bus::Notice { space_id: "space-1".into(), seq: 0 };
    assert!(matches!(bus.publish(invalid).await, Err(BusError::InvalidNotice(_))));
    let invalid = core_bus::Notice { space_id: "space.1".into(), seq: 1 };
    assert!(matches!(bus.publish(invalid).await, Err(BusError::InvalidNotice(_))));
    assert_silent(&mut s1, 200).await;
}

async fn two_nodes(c: Cluster) {
    let (a, b) = (c.a.bus(), c.b.bus());
    let mut on_a = a.subscribe("s1").await.unwrap();
    let mut on_b = b.subscribe("s1").await.unwrap();
    let mut other_b = b.subscribe("s2").await.unwrap();
    let mut other_a = a.subscribe("s2").await.unwrap();

    a.publish(notice("s1", 1)).await.unwrap();
    assert_eq!(recv(&mut on_b).await, notice("s1", 1));
    assert_eq!(recv(&mut on_a).await, notice("s1", 1));

    b.publish(notice("s1", 2)).await.unwrap();
    assert_eq!(recv(&mut on_a).await, notice("s1", 2));
    assert_eq!(recv(&mut on_b).await, notice("s1", 2));

    assert_silent(&mut other_b, 300).await;
    assert_silent(&mut other_a, 0).await;
    // Exactly once: no duplicates.
    assert_silent(&mut on_a, 100).await;
    assert_silent(&mut on_b, 0).await;
}

async fn unsubscribe_on_drop(c: Cluster) {
    let (a, b) = (c.a.bus(), c.b.bus());
    assert_eq!(c.a.active_spaces(), 0);
    let subs =
        vec![a.subscribe("s1").await.unwrap(), a.subscribe("s1").await.unwrap(), a.subscribe("s2").await.unwrap()];
    assert_eq!(c.a.active_spaces(), 2);
    let mut keep = a.subscribe("s3").await.unwrap();
    assert_eq!(c.a.active_spaces(), 3);
    drop(subs);
    assert_eq!(c.a.active_spaces(), 1, "no entry left for s1 and s2");
    drop(keep);
    assert_eq!(c.a.active_spaces(), 0, "registry is empty");

    // A failed subscribe leaves nothing behind either.
    assert!(a.subscribe("no.dots").await.is_err());
    assert_eq!(c.a.active_spaces(), 0);

    // Subscribing again after the entry is gone works (fresh transport subscription).
    keep = a.subscribe("s1").await.unwrap();
    b.publish(notice("s1", 7)).await.unwrap();
    assert_eq!(recv(&mut keep).await, notice("s1", 7));
    drop(keep);
    assert_eq!(c.a.active_spaces(), 0);
}

async fn many_spaces_many_subscribers(c: Cluster) {
    const SPACES: usize = 20;
    const PER_SPACE: usize = 5;
    const NOTICES: i64 = 3;
    let (a, b) = (c.a.bus(), c.b.bus());
    let mut subs = Vec::new();
    for s in 0..SPACES {
        for i in 0..PER_SPACE {
            let node = if i % 2 == 0 { &a } else { &b };
            subs.push(node.subscribe(&format!("space-{s}")).await.unwrap());
        }
    }
    assert_eq!(c.a.active_spaces(), SPACES);
    assert_eq!(c.b.active_spaces(), SPACES);
    // Each space gets its notices from one publisher, alternating nodes across spaces.
    for seq in 1..=NOTICES {
        for s in 0..SPACES {
            let node = if s % 2 == 0 { &a } else { &b };
            node.publish(notice(&format!("space-{s}"), seq)).await.unwrap();
        }
    }
    for sub in &mut subs {
        let space = sub.space_id().to_owned();
        for seq in 1..=NOTICES {
            assert_eq!(recv(sub).await, notice(&space, seq));
        }
    }
    for sub in &mut subs {
        assert_silent(sub, 0).await;
    }
    assert_silent(&mut subs[0], 200).await;
    drop(subs);
    assert_eq!(c.a.active_spaces(), 0);
    assert_eq!(c.b.active_spaces(), 0);
}

async fn slow_subscriber_does_not_block_fast(c: Cluster) {
    const TOTAL: i64 = 1000; // well over the per-space capacity (256)
    const BATCH: i64 = 50;
    let (a, b) = (c.a.bus(), c.b.bus());
    let mut slow = b.subscribe("busy").await.unwrap();
    let mut fast = b.subscribe("busy").await.unwrap();
    let (progress_tx, mut progress) = mpsc::unbounded_channel();
    let reader = tokio::spawn(async move {
        let mut seen = Vec::new();
        while seen.len() < TOTAL as usize {
            let n = recv(&mut fast).await;
            seen.push(n.seq);
            let _ = progress_tx.send(n.seq);
        }
        (seen, fast.lagged())
    });
    // Publish in batches, waiting for the fast reader only: the slow one never reads meanwhile.
    let mut acked = 0;
    for start in (1..=TOTAL).step_by(BATCH as usize) {
        for seq in start..start + BATCH {
            a.publish(notice("busy", seq)).await.unwrap();
        }
        while acked < start + BATCH - 1 {
            acked = progress.recv().await.expect("fast reader alive");
        }
    }
    let (seen, fast_lagged) = reader.await.unwrap();
    assert_eq!(seen, (1..=TOTAL).collect::<Vec<_>>(), "fast subscriber got everything in order");
    assert_eq!(fast_lagged, 0);

    // The slow one skips ahead: increasing seqs, ending with the newest; every
    // notice is either delivered or counted as skipped.
    let (mut last, mut received) = (0, 0u64);
    while last < TOTAL {
        let n = recv(&mut slow).await;
        assert!(n.seq > last, "{} after {last}", n.seq);
        last = n.seq;
        received += 1;
    }
    assert!(slow.lagged() > 0, "slow subscriber lagged");
    assert!(received <= core_bus::DEFAULT_CAPACITY as u64, "received {received}");
    assert_eq!(slow.lagged() + received, TOTAL as u64);
}

async fn malformed_notices_dropped(c: Cluster) {
    let (a, b) = (c.a.bus(), c.b.bus());
    let mut sub = a.subscribe("s1").await.unwrap();
    if let Some((raw, bus_a)) = &c.raw {
        let subject = bus_a.subject("s1");
        let bad: Vec<Vec<u8>> = vec![
            b"garbage".to_vec(),
            b"\xff\xfe\x00".to_vec(),
            Vec::new(),
            br#"{"space_id":"s1","seq":-5}"#.to_vec(),
            br#"{"space_id":"s1","seq":0}"#.to_vec(),
            br#"{"space_id":"s1.x","seq":1}"#.to_vec(),
            br#"{"space_id":"s2","seq":1}"#.to_vec(), // wrong space for the subject
            format!(r#"{{"space_id":"{}","seq":1}}"#, "x".repeat(10_000)).into_bytes(),
            b"s1\n1".to_vec(),
        ];
        let count = bad.len() as u64;
        for payload in bad {
            raw.publish(subject.clone(), payload.into()).await.unwrap();
        }
        raw.flush().await.unwrap();
        b.publish(notice("s1", 5)).await.unwrap();
        assert_eq!(recv(&mut sub).await, notice("s1", 5), "valid notice still flows");
        // The valid notice came over another connection: NATS orders messages per
        // publisher only, so the malformed ones may still be on their way.
        let t = std::time::Instant::now();
        while bus_a.malformed_notices() < count && t.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(bus_a.malformed_notices(), count);
    } else {
        // In process there is no wire: invalid notices are refused at publish.
        let bad = core_bus::Notice { space_id: "s1".into(), seq: -1 };
        assert!(b.publish(bad).await.is_err());
        b.publish(notice("s1", 5)).await.unwrap();
        assert_eq!(recv(&mut sub).await, notice("s1", 5));
    }
    assert_silent(&mut sub, 200).await;
}

async fn ordering_per_space(c: Cluster) {
    const N: i64 = 200; // below the channel capacity: no skipping expected
    let (a, b) = (c.a.bus(), c.b.bus());
    let mut on_a = a.subscribe("ordered").await.unwrap();
    let mut on_b = b.subscribe("ordered").await.unwrap();
    let mut noise = b.subscribe("noise").await.unwrap();
    for seq in 1..=N {
        a.publish(notice("ordered", seq)).await.unwrap();
        a.publish(notice("noise", seq)).await.unwrap();
    }
    for sub in [&mut on_a, &mut on_b, &mut noise] {
        let space = sub.space_id().to_owned();
        for seq in 1..=N {
            assert_eq!(recv(sub).await, notice(&space, seq));
        }
        assert_eq!(sub.lagged(), 0);
    }
}
