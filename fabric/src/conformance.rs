//! The test suite every backend must pass, written once against the [`Fabric`] contract.
//!
//! A backend's test file implements [`Harness`] (how to build a connected cluster, how to let
//! time pass, how to crash a node) and expands [`conformance_suite!`](crate::conformance_suite),
//! which turns every check below into a `#[test]`. The checks panic on a violation, as tests do.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::{Fabric, FabricError, Link, Region, RegionId, RegionSpec, RemoteRegion, WriteRequest};

/// What the suite needs from a backend's test set-up.
pub trait Harness {
    /// Builds `n` fabrics with node ids `0..n`, every pair linked.
    fn cluster(&self, n: usize) -> Vec<Arc<dyn Fabric>>;
    /// Lets the fabric make progress until `cond` holds or `timeout` passes (real or virtual
    /// time). Returns whether `cond` held.
    fn drive(
        &self,
        fabrics: &[Arc<dyn Fabric>],
        timeout: Duration,
        cond: &mut dyn FnMut() -> bool,
    ) -> bool;
    /// Runs `job` on another thread if the backend has real concurrency (so readers race with
    /// it), or right away if it is simulated. The returned closure waits for it to finish.
    fn spawn(&self, job: Box<dyn FnOnce() + Send>) -> Box<dyn FnOnce()>;
    /// Kills node `i` abruptly, as `kill -9` would.
    fn crash(&self, fabrics: &[Arc<dyn Fabric>], i: usize);
    /// Whether another thread may register regions while a lookup waits (false for sim).
    fn concurrent(&self) -> bool;
}

/// Expands to one `#[test]` per conformance check, each building its harness with `$make`.
#[macro_export]
macro_rules! conformance_suite {
    ($make:expr) => {
        #[test]
        fn conformance_ordering() {
            $crate::conformance::ordering(&$make);
        }
        #[test]
        fn conformance_no_torn_words() {
            $crate::conformance::no_torn_words(&$make);
        }
        #[test]
        fn conformance_completion() {
            $crate::conformance::completion(&$make);
        }
        #[test]
        fn conformance_immediate() {
            $crate::conformance::immediate(&$make);
        }
        #[test]
        fn conformance_region_lookup() {
            $crate::conformance::region_lookup(&$make);
        }
        #[test]
        fn conformance_bounds() {
            $crate::conformance::bounds(&$make);
        }
        #[test]
        fn conformance_deregistered_region() {
            $crate::conformance::deregistered_region(&$make);
        }
        #[test]
        fn conformance_peer_failure() {
            $crate::conformance::peer_failure(&$make);
        }
        #[test]
        fn conformance_doorbell() {
            $crate::conformance::doorbell(&$make);
        }
    };
}

const LOOKUP: Duration = Duration::from_secs(5);
const DEADLINE: Duration = Duration::from_secs(30);

fn region(f: &Arc<dyn Fabric>, id: u64, len: usize) -> Arc<Region> {
    f.register(RegionSpec::new(RegionId(id), len)).unwrap()
}

fn link(f: &Arc<dyn Fabric>, peer: u32) -> Arc<dyn Link> {
    f.link(peer)
        .unwrap_or_else(|| panic!("node {} has no link to {peer}", f.local_id()))
}

fn remote(l: &Arc<dyn Link>, id: u64) -> RemoteRegion {
    l.remote_region(RegionId(id), LOOKUP).unwrap()
}

/// A stream of payload writes, each followed by a counter write: a reader that sees counter `c`
/// must see every payload word at least `c` (payload first, counter last).
pub fn ordering(h: &dyn Harness) {
    const PAYLOAD: usize = 4096;
    const SLOTS: usize = 16;
    const ROUNDS: u64 = 1500;
    let fabrics = h.cluster(2);
    // Writer: one source slot per in-flight payload, plus a counter word per slot.
    let src = region(&fabrics[0], 1, SLOTS * (PAYLOAD + 8));
    let dst = region(&fabrics[1], 1, 8 + PAYLOAD);
    let l = link(&fabrics[0], 1);
    let r = remote(&l, 1);
    let writer = {
        let (src, l) = (Arc::clone(&src), Arc::clone(&l));
        Box::new(move || {
            for i in 1..=ROUNDS {
                let slot = (i as usize) % SLOTS;
                let base = slot * (PAYLOAD + 8);
                let bytes: Vec<u8> = std::iter::repeat_n(i.to_le_bytes(), PAYLOAD / 8)
                    .flatten()
                    .collect();
                src.write(base, &bytes).unwrap();
                src.store_u64(base + PAYLOAD, i);
                l.write(&WriteRequest::new(&src, base, &r, 8, PAYLOAD))
                    .unwrap();
                let counter = WriteRequest::new(&src, base + PAYLOAD, &r, 0, 8);
                if slot == SLOTS - 1 {
                    // Before the slots are reused, wait until everything sent from them landed.
                    l.write_signaled(&counter).unwrap().wait(DEADLINE).unwrap();
                } else {
                    l.write(&counter).unwrap();
                }
            }
        })
    };
    let join = h.spawn(writer);
    let mut last = 0u64;
    let mut buf = vec![0u8; PAYLOAD];
    let mut checks = 0u64;
    let done = h.drive(&fabrics, DEADLINE, &mut || {
        let c = dst.load_u64(0);
        assert!(c >= last, "counter went backwards: {last} then {c}");
        last = c;
        dst.read(8, &mut buf).unwrap();
        for (k, w) in buf.chunks_exact(8).enumerate() {
            let w = u64::from_le_bytes(w.try_into().unwrap());
            assert!(
                w >= c,
                "payload word {k} is {w} while counter is {c}: payload overtaken by its guard"
            );
        }
        checks += 1;
        c == ROUNDS
    });
    join();
    assert!(done, "reader saw counter {last} of {ROUNDS}");
    assert!(checks > 1);
}

/// Aligned 8-byte words are never seen half old, half new, even with an unaligned source.
pub fn no_torn_words(h: &dyn Harness) {
    const WORDS: usize = 64;
    const ROUNDS: usize = 1000;
    let fabrics = h.cluster(2);
    let src = region(&fabrics[0], 2, 16 + 2 * WORDS * 8);
    let dst = region(&fabrics[1], 2, 8 + WORDS * 8);
    // Two patterns at an odd source offset: all zero and all ones.
    src.fill(3, WORDS * 8, 0x00).unwrap();
    src.fill(3 + WORDS * 8, WORDS * 8, 0xff).unwrap();
    let l = link(&fabrics[0], 1);
    let r = remote(&l, 2);
    let writer = {
        let (src, l) = (Arc::clone(&src), Arc::clone(&l));
        Box::new(move || {
            for i in 0..ROUNDS {
                let from = 3 + (i % 2) * WORDS * 8;
                l.write(&WriteRequest::new(&src, from, &r, 8, WORDS * 8))
                    .unwrap();
            }
            src.store_u64(16 + 2 * WORDS * 8 - 8, 1);
            let last = 16 + 2 * WORDS * 8 - 8;
            l.write_signaled(&WriteRequest::new(&src, last, &r, 0, 8))
                .unwrap()
                .wait(DEADLINE)
                .unwrap();
        })
    };
    let join = h.spawn(writer);
    let done = h.drive(&fabrics, DEADLINE, &mut || {
        for k in 0..WORDS {
            let w = dst.load_u64(8 + k * 8);
            assert!(w == 0 || w == u64::MAX, "torn word {k}: {w:#018x}");
        }
        dst.load_u64(0) == 1
    });
    join();
    assert!(done, "the final write never landed");
}

/// A signaled write completes, and its bytes are there when it does.
pub fn completion(h: &dyn Harness) {
    let fabrics = h.cluster(2);
    let src = region(&fabrics[0], 3, 1024);
    let dst = region(&fabrics[1], 3, 1024);
    let pattern: Vec<u8> = (0..1024u32).map(|i| (i * 31 % 251) as u8).collect();
    src.write(0, &pattern).unwrap();
    let l = link(&fabrics[0], 1);
    let r = remote(&l, 3);
    let c = l
        .write_signaled(&WriteRequest::mirrored(&src, &r, 0, 1024))
        .unwrap();
    let mut outcome = None;
    let ok = h.drive(&fabrics, DEADLINE, &mut || {
        outcome = c.poll();
        outcome.is_some()
    });
    assert!(ok, "completion never arrived");
    outcome.unwrap().unwrap();
    c.wait(Duration::from_millis(1)).unwrap();
    let mut got = vec![0u8; 1024];
    dst.read(0, &mut got).unwrap();
    assert_eq!(got, pattern, "completed write not fully applied");
}

/// A write with an immediate value notifies the target region's owner, in order.
pub fn immediate(h: &dyn Harness) {
    let fabrics = h.cluster(2);
    let src = region(&fabrics[0], 4, 256);
    let dst = region(&fabrics[1], 4, 256);
    src.fill(0, 256, 0x5a).unwrap();
    let l = link(&fabrics[0], 1);
    let r = remote(&l, 4);
    for imm in 0..10u32 {
        let req = WriteRequest::new(&src, 0, &r, imm as usize * 8, 100).with_imm(0xab00 + imm);
        l.write(&req).unwrap();
    }
    let mut got = Vec::new();
    let ok = h.drive(&fabrics, DEADLINE, &mut || {
        while let Some(n) = dst.next_notification() {
            got.push(n);
        }
        got.len() == 10
    });
    assert!(ok, "got {} of 10 notifications", got.len());
    for (i, n) in got.iter().enumerate() {
        assert_eq!(n.from, 0);
        assert_eq!(n.imm, 0xab00 + i as u32, "notifications out of order");
        assert_eq!(n.len, 100);
    }
    assert_eq!(
        dst.load_u8(72 + 99),
        0x5a,
        "bytes of the last write missing"
    );
}

/// Regions are found by name; a missing one is a clear error, one registered later is found.
pub fn region_lookup(h: &dyn Harness) {
    let fabrics = h.cluster(2);
    let l = link(&fabrics[0], 1);
    match l.remote_region(RegionId(77), Duration::from_millis(300)) {
        Err(FabricError::NoSuchRegion { peer: 1, region }) => assert_eq!(region, RegionId(77)),
        other => panic!("expected NoSuchRegion, got {other:?}"),
    }
    let dup = fabrics[1].register(RegionSpec::new(RegionId(78), 64));
    assert!(dup.is_ok());
    assert!(matches!(
        fabrics[1].register(RegionSpec::new(RegionId(78), 64)),
        Err(FabricError::DuplicateRegion(_))
    ));
    if h.concurrent() {
        let f1 = Arc::clone(&fabrics[1]);
        let join = h.spawn(Box::new(move || {
            std::thread::sleep(Duration::from_millis(100));
            f1.register(RegionSpec::new(RegionId(79), 128)).unwrap();
        }));
        let found = l.remote_region(RegionId(79), LOOKUP).unwrap();
        join();
        assert_eq!((found.owner, found.len), (1, 128));
    }
}

/// Out-of-range writes are refused before anything is sent, and the link stays usable.
pub fn bounds(h: &dyn Harness) {
    let fabrics = h.cluster(2);
    let src = region(&fabrics[0], 5, 64);
    let _dst = region(&fabrics[1], 5, 32);
    let l = link(&fabrics[0], 1);
    let r = remote(&l, 5);
    assert!(matches!(
        l.write(&WriteRequest::new(&src, 0, &r, 16, 24)),
        Err(FabricError::OutOfBounds { .. })
    ));
    assert!(matches!(
        l.write(&WriteRequest::new(&src, 60, &r, 0, 8)),
        Err(FabricError::OutOfBounds { .. })
    ));
    let foreign = RemoteRegion { owner: 9, ..r };
    assert!(matches!(
        l.write(&WriteRequest::new(&src, 0, &foreign, 0, 8)),
        Err(FabricError::Misaddressed(_))
    ));
    let c = l
        .write_signaled(&WriteRequest::new(&src, 0, &r, 0, 32))
        .unwrap();
    assert!(h.drive(&fabrics, DEADLINE, &mut || c.poll().is_some()));
    c.wait(Duration::from_millis(1)).unwrap();
    assert!(l.failure().is_none());
}

/// Writes to a region the peer has deregistered are discarded; the link survives.
pub fn deregistered_region(h: &dyn Harness) {
    let fabrics = h.cluster(2);
    let src = region(&fabrics[0], 6, 64);
    let gone = region(&fabrics[1], 6, 64);
    let kept = region(&fabrics[1], 7, 64);
    let l = link(&fabrics[0], 1);
    let r_gone = remote(&l, 6);
    let r_kept = remote(&l, 7);
    fabrics[1].deregister(RegionId(6)).unwrap();
    src.store_u64(0, 42);
    l.write(&WriteRequest::mirrored(&src, &r_gone, 0, 8))
        .unwrap();
    let c = l
        .write_signaled(&WriteRequest::mirrored(&src, &r_kept, 0, 8))
        .unwrap();
    assert!(h.drive(&fabrics, DEADLINE, &mut || c.poll().is_some()));
    c.wait(Duration::from_millis(1)).unwrap();
    assert_eq!(kept.load_u64(0), 42);
    assert_eq!(gone.load_u64(0), 0, "write landed in a deregistered region");
    assert!(l.failure().is_none());
}

/// A crashed peer is reported exactly once to each survivor's subscribers, writes to it fail,
/// and the survivors' own link keeps working.
pub fn peer_failure(h: &dyn Harness) {
    let fabrics = h.cluster(3);
    let reports: Vec<Arc<Mutex<Vec<u32>>>> =
        (0..3).map(|_| Arc::new(Mutex::new(Vec::new()))).collect();
    for (f, r) in fabrics.iter().zip(&reports) {
        let r = Arc::clone(r);
        f.subscribe_failures(Arc::new(move |peer, _reason| r.lock().unwrap().push(peer)));
    }
    let src = region(&fabrics[0], 8, 64);
    let dst2 = region(&fabrics[2], 8, 64);
    let _dst1 = region(&fabrics[1], 8, 64);
    let l01 = link(&fabrics[0], 1);
    let l02 = link(&fabrics[0], 2);
    let r1 = remote(&l01, 8);
    let r2 = remote(&l02, 8);
    h.crash(&fabrics, 1);
    let start = Instant::now();
    let seen = h.drive(&fabrics, DEADLINE, &mut || {
        reports[0].lock().unwrap().contains(&1) && reports[2].lock().unwrap().contains(&1)
    });
    assert!(seen, "crash of node 1 not reported to both survivors");
    let detect = start.elapsed();
    // Give duplicates a chance to show up.
    h.drive(&fabrics, Duration::from_millis(200), &mut || false);
    assert_eq!(*reports[0].lock().unwrap(), vec![1], "node 0 reports");
    assert_eq!(*reports[2].lock().unwrap(), vec![1], "node 2 reports");
    let err = l01.write(&WriteRequest::mirrored(&src, &r1, 0, 8));
    assert!(
        matches!(err, Err(FabricError::LinkFailed { peer: 1, .. })),
        "got {err:?}"
    );
    assert!(l01.failure().is_some());
    src.store_u64(0, 7);
    let c = l02
        .write_signaled(&WriteRequest::mirrored(&src, &r2, 0, 8))
        .unwrap();
    assert!(h.drive(&fabrics, DEADLINE, &mut || c.poll().is_some()));
    c.wait(Duration::from_millis(1)).unwrap();
    assert_eq!(dst2.load_u64(0), 7);
    assert!(detect < DEADLINE);
}

/// A write rings the target region's doorbell, so a parked poller wakes.
pub fn doorbell(h: &dyn Harness) {
    let fabrics = h.cluster(2);
    let src = region(&fabrics[0], 9, 64);
    let dst = region(&fabrics[1], 9, 64);
    let l = link(&fabrics[0], 1);
    let r = remote(&l, 9);
    let before = dst.doorbell().epoch();
    src.store_u64(0, 1);
    l.write(&WriteRequest::mirrored(&src, &r, 0, 8)).unwrap();
    let rang = h.drive(&fabrics, DEADLINE, &mut || dst.doorbell().epoch() != before);
    assert!(rang, "doorbell not rung");
    assert_eq!(
        dst.load_u64(0),
        1,
        "doorbell rang before the write was visible"
    );
    if h.concurrent() {
        let woke = Arc::new(AtomicBool::new(false));
        let (d, w) = (Arc::clone(&dst), Arc::clone(&woke));
        let seen = dst.doorbell().epoch();
        let waiter = std::thread::spawn(move || {
            let moved = d.doorbell().wait(seen, Duration::from_secs(10));
            w.store(moved, Ordering::SeqCst);
        });
        std::thread::sleep(Duration::from_millis(50));
        src.store_u64(0, 2);
        l.write(&WriteRequest::mirrored(&src, &r, 0, 8)).unwrap();
        waiter.join().unwrap();
        assert!(woke.load(Ordering::SeqCst), "parked poller not woken");
    }
}

/// A backend whose nodes can all run as threads of one process, linked over 127.0.0.1
/// (tcp, shm, libfabric): enough for [`Local`] to build its clusters.
pub trait LocalBackend: Fabric + Clone + 'static {
    /// Starts node `id` listening on an ephemeral port of 127.0.0.1.
    fn start_local(id: crate::NodeId) -> Result<Self, FabricError> {
        Self::start_local_with(id, &crate::secure::Credentials::Open)
    }
    /// [`LocalBackend::start_local`] with every link authenticated by `credentials`.
    fn start_local_with(
        id: crate::NodeId,
        credentials: &crate::secure::Credentials,
    ) -> Result<Self, FabricError>;
    /// Closes every link without a goodbye, as a crash would.
    fn abort_now(&self);
}

impl LocalBackend for crate::tcp::TcpFabric {
    fn start_local_with(
        id: crate::NodeId,
        credentials: &crate::secure::Credentials,
    ) -> Result<Self, FabricError> {
        let mut c = crate::tcp::TcpConfig::new(id, local_any());
        c.credentials = credentials.clone();
        crate::tcp::TcpFabric::start(c)
    }
    fn abort_now(&self) {
        self.abort();
    }
}

impl LocalBackend for crate::shm::ShmFabric {
    fn start_local_with(
        id: crate::NodeId,
        credentials: &crate::secure::Credentials,
    ) -> Result<Self, FabricError> {
        let mut c = crate::shm::ShmConfig::new(id, local_any());
        c.credentials = credentials.clone();
        crate::shm::ShmFabric::start(c)
    }
    fn abort_now(&self) {
        self.abort();
    }
}

#[cfg(feature = "libfabric")]
impl LocalBackend for crate::libfabric::LibfabricFabric {
    fn start_local_with(
        id: crate::NodeId,
        credentials: &crate::secure::Credentials,
    ) -> Result<Self, FabricError> {
        let mut c = crate::backends::LibfabricConfig::new(id, local_any());
        c.credentials = credentials.clone();
        crate::libfabric::LibfabricFabric::start(c)
    }
    fn abort_now(&self) {
        self.abort();
    }
}

fn local_any() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 0))
}

/// The harness for a [`LocalBackend`]: every node a set of threads of this process, real
/// sockets and memory between them, real concurrency between writers and readers.
pub struct Local<B: LocalBackend> {
    made: Mutex<Vec<B>>,
    credentials: crate::secure::Credentials,
}

impl<B: LocalBackend> Default for Local<B> {
    fn default() -> Self {
        Self {
            made: Mutex::new(Vec::new()),
            credentials: crate::secure::Credentials::Open,
        }
    }
}

impl<B: LocalBackend> Local<B> {
    /// A harness that has made no fabric yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A harness whose fabrics authenticate (and, where the backend carries data on its side
    /// channel, seal) every link with one group secret.
    pub fn secure() -> Self {
        Self {
            made: Mutex::new(Vec::new()),
            credentials: crate::secure::Credentials::Member {
                group: crate::secure::Secret::from_bytes([0x42; crate::secure::SECRET_LEN]),
                clients: None,
            },
        }
    }
}

impl<B: LocalBackend> Drop for Local<B> {
    fn drop(&mut self) {
        for f in self.made.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            f.shutdown();
        }
    }
}

impl<B: LocalBackend> Harness for Local<B> {
    fn cluster(&self, n: usize) -> Vec<Arc<dyn Fabric>> {
        let fabrics: Vec<B> = (0..n)
            .map(|i| B::start_local_with(i as u32, &self.credentials).unwrap())
            .collect();
        let addrs: Vec<std::net::SocketAddr> =
            fabrics.iter().map(|f| f.local_addr().unwrap()).collect();
        // Every node connects to every other at once; the higher id dials.
        std::thread::scope(|s| {
            for (i, f) in fabrics.iter().enumerate() {
                let addrs = &addrs;
                s.spawn(move || {
                    for (j, addr) in addrs.iter().enumerate() {
                        if i != j {
                            f.connect(j as u32, *addr, Duration::from_secs(10)).unwrap();
                        }
                    }
                });
            }
        });
        self.made.lock().unwrap().extend(fabrics.iter().cloned());
        fabrics
            .into_iter()
            .map(|f| Arc::new(f) as Arc<dyn Fabric>)
            .collect()
    }

    fn drive(
        &self,
        _f: &[Arc<dyn Fabric>],
        timeout: Duration,
        cond: &mut dyn FnMut() -> bool,
    ) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if cond() {
                return true;
            }
            if Instant::now() >= deadline {
                return cond();
            }
            std::thread::yield_now();
        }
    }

    fn spawn(&self, job: Box<dyn FnOnce() + Send>) -> Box<dyn FnOnce()> {
        let t = std::thread::spawn(job);
        Box::new(move || t.join().expect("writer thread panicked"))
    }

    fn crash(&self, fabrics: &[Arc<dyn Fabric>], i: usize) {
        let (id, addr) = (fabrics[i].local_id(), fabrics[i].local_addr());
        let made = self.made.lock().unwrap();
        let f = made
            .iter()
            .find(|f| f.local_id() == id && f.local_addr() == addr);
        f.expect("fabric made by this harness").abort_now();
    }

    fn concurrent(&self) -> bool {
        true
    }
}
