//! tcp-specific behaviour: what arrives on the listening port, and peers in other processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use derecho_fabric::probe::{self, Wait};
use derecho_fabric::tcp::{TcpConfig, TcpFabric};
use derecho_fabric::{Fabric, FabricError, RegionId, RegionSpec, WriteRequest};

fn any() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn start(id: u32) -> TcpFabric {
    let mut cfg = TcpConfig::new(id, any());
    cfg.handshake_timeout = Duration::from_millis(300);
    TcpFabric::start(cfg).unwrap()
}

/// Reads until the peer closes the connection; true if it did within `limit`.
fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 256];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false,
        }
    }
}

fn hello(version: u16, from: u32, to: u32) -> [u8; 32] {
    let mut h = [0u8; 32];
    h[0..4].copy_from_slice(b"DRFB");
    h[4..6].copy_from_slice(&version.to_le_bytes());
    h[8..12].copy_from_slice(&from.to_le_bytes());
    h[12..16].copy_from_slice(&to.to_le_bytes());
    h[16..24].copy_from_slice(&42u64.to_le_bytes());
    h
}

/// Checks that two fresh fabrics can still link and complete a write, i.e. `a` is unharmed.
fn still_works(a: &TcpFabric) {
    let b = start(a.local_id() + 1);
    let link = b
        .connect(
            a.local_id(),
            a.local_addr().unwrap(),
            Duration::from_secs(5),
        )
        .unwrap();
    let dst = a
        .register(RegionSpec::new(RegionId(500 + u64::from(b.local_id())), 64))
        .unwrap();
    let src = b.register(RegionSpec::new(RegionId(1), 64)).unwrap();
    src.store_u64(0, 99);
    let r = link
        .remote_region(dst.id(), Duration::from_secs(5))
        .unwrap();
    link.write_signaled(&WriteRequest::mirrored(&src, &r, 0, 8))
        .unwrap()
        .wait(Duration::from_secs(5))
        .unwrap();
    assert_eq!(dst.load_u64(0), 99);
    b.shutdown();
}

#[test]
fn garbage_on_the_port_is_refused_and_harmless() {
    let a = start(10);
    let addr = a.local_addr().unwrap();
    // Plain garbage.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&[0x47u8; 64]).unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "garbage connection left open"
    );
    // An HTTP request.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)));
    // A connection that says nothing is dropped after the handshake timeout.
    let mut s = TcpStream::connect(addr).unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "silent connection left open"
    );
    // Half a hello, then nothing.
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(&hello(1, 11, 10)[..10]).unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(3)));
    assert!(a.link(11).is_none(), "a partial hello created a link");
    still_works(&a);
    a.shutdown();
}

#[test]
fn version_mismatch_is_refused_with_a_reason() {
    let a = start(20);
    let mut s = TcpStream::connect(a.local_addr().unwrap()).unwrap();
    s.write_all(&hello(99, 21, 20)).unwrap();
    let mut answer = [0u8; 32];
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.read_exact(&mut answer).unwrap();
    assert_eq!(&answer[0..4], b"DRFB");
    assert_eq!(
        u16::from_le_bytes([answer[6], answer[7]]),
        2,
        "status should say version mismatch"
    );
    assert!(closed_within(&mut s, Duration::from_secs(3)));
    assert!(a.link(21).is_none());
    still_works(&a);
    a.shutdown();
}

#[test]
fn a_wrong_node_is_refused_on_both_sides() {
    let a = start(30);
    // Dialing node 35 at node 30's address: the dialer learns who answered.
    let c = start(40);
    match c.connect(35, a.local_addr().unwrap(), Duration::from_secs(3)) {
        Err(FabricError::Connect { peer: 35, reason }) => {
            assert!(reason.contains("is node 30"), "unclear reason: {reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    // A hello that claims to come from the listener's own id.
    let mut s = TcpStream::connect(a.local_addr().unwrap()).unwrap();
    s.write_all(&hello(1, 30, 30)).unwrap();
    let mut answer = [0u8; 32];
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.read_exact(&mut answer).unwrap();
    assert_eq!(
        u16::from_le_bytes([answer[6], answer[7]]),
        1,
        "status should say wrong node"
    );
    assert!(a.link(35).is_none() && a.link(40).is_none());
    still_works(&a);
    a.shutdown();
    c.shutdown();
}

#[test]
fn a_write_outside_the_region_from_a_peer_fails_only_that_link() {
    // A hand-rolled peer that handshakes correctly, then writes past the end of a region.
    let a = start(50);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r2 = Arc::clone(&reports);
    a.subscribe_failures(Arc::new(move |peer, reason: &str| {
        r2.lock().unwrap().push((peer, reason.to_string()))
    }));
    let mut s = TcpStream::connect(a.local_addr().unwrap()).unwrap();
    s.write_all(&hello(1, 51, 50)).unwrap();
    let mut answer = [0u8; 32];
    s.read_exact(&mut answer).unwrap();
    assert_eq!(u16::from_le_bytes([answer[6], answer[7]]), 0);
    let region = a.register(RegionSpec::new(RegionId(3), 64)).unwrap();
    // A QUERY frame to learn the key, as a real peer would.
    let mut q = [0u8; 32];
    q[0] = 3;
    q[4..8].copy_from_slice(&1u32.to_le_bytes());
    q[8..16].copy_from_slice(&3u64.to_le_bytes());
    s.write_all(&q).unwrap();
    let mut ans = [0u8; 32];
    s.read_exact(&mut ans).unwrap();
    assert_eq!(ans[0], 4);
    let key = u64::from_le_bytes(ans[8..16].try_into().unwrap());
    assert_eq!(key, region.key());
    let mut w = [0u8; 32];
    w[0] = 1;
    w[8..16].copy_from_slice(&key.to_le_bytes());
    w[16..24].copy_from_slice(&60u64.to_le_bytes());
    w[24..32].copy_from_slice(&16u64.to_le_bytes());
    s.write_all(&w).unwrap();
    s.write_all(&[0xee; 16]).unwrap();
    assert!(
        closed_within(&mut s, Duration::from_secs(3)),
        "link not closed after a bad write"
    );
    // The socket closes just before the report goes out; wait for it, bounded.
    let t = Instant::now();
    while reports.lock().unwrap().is_empty() && t.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let got = reports.lock().unwrap().clone();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, 51);
    assert!(got[0].1.contains("outside"), "reason: {}", got[0].1);
    assert_eq!(region.load_u64(56), 0, "bad write touched memory");
    still_works(&a);
    a.shutdown();
}

/// Kills and reaps the child on every exit path of a test.
struct ChildGuard(Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn kill_9_of_a_peer_process_is_reported_once() {
    let me = start(0);
    let reports = Arc::new(Mutex::new(Vec::new()));
    let r2 = Arc::clone(&reports);
    me.subscribe_failures(Arc::new(move |peer, _reason: &str| {
        r2.lock().unwrap().push(peer)
    }));
    let child = Command::new(env!("CARGO_BIN_EXE_fabric-probe"))
        .args(["echo", "--id", "1", "--peer", "0", "--peer-addr"])
        .arg(me.local_addr().unwrap().to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut child = ChildGuard(child);
    let mut out = BufReader::new(child.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("listening "), "probe said {line:?}");
    let region = probe::register(&me, 1 << 20).unwrap();
    let link = me.connect(1, any(), Duration::from_secs(20)).unwrap();
    let rtts = probe::ping(&region, link.as_ref(), 50, Wait::Spin).unwrap();
    assert_eq!(rtts.len(), 50);
    // SIGKILL: the kernel closes the child's sockets, so the loss shows at once.
    child.0.kill().unwrap();
    let killed = Instant::now();
    while reports.lock().unwrap().is_empty() && killed.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let detect = killed.elapsed();
    assert_eq!(*reports.lock().unwrap(), vec![1], "not reported within 5 s");
    assert!(detect < Duration::from_secs(2), "detection took {detect:?}");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(reports.lock().unwrap().len(), 1, "reported more than once");
    let remote = derecho_fabric::RemoteRegion {
        owner: 1,
        id: probe::PROBE_REGION,
        len: 1 << 20,
        key: 0,
        addr: 0,
    };
    let err = link.write(&WriteRequest::mirrored(&region, &remote, 0, 8));
    assert!(
        matches!(err, Err(FabricError::LinkFailed { peer: 1, .. })),
        "{err:?}"
    );
    me.shutdown();
}

#[test]
fn the_accepting_side_may_use_a_link_the_moment_it_appears() {
    // The accepting side's `connect` returns as soon as the link is installed; its first frame
    // must never overtake the handshake answer the dialer is waiting for.
    for round in 0..60u64 {
        let low = start(1);
        let high = start(2);
        let low_addr = low.local_addr().unwrap();
        let _r_low = low.register(RegionSpec::new(RegionId(round), 64)).unwrap();
        let _r_high = high.register(RegionSpec::new(RegionId(round), 64)).unwrap();
        let waiter = {
            let low = low.clone();
            std::thread::spawn(move || {
                let l = low.connect(2, any(), Duration::from_secs(5)).unwrap();
                l.remote_region(RegionId(round), Duration::from_secs(5))
                    .unwrap()
            })
        };
        let l = high
            .connect(1, low_addr, Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        l.remote_region(RegionId(round), Duration::from_secs(5))
            .unwrap();
        waiter.join().unwrap();
        low.shutdown();
        high.shutdown();
    }
}

/// In the certificate mode, the holder of a valid certificate for node 5 dials node 0's fabric
/// port and sends a hello in the name of node 1, a live member linked to node 0: the hello is
/// refused (a refusal answer, then the connection closes), and node 0's link to node 1 keeps
/// carrying writes, so nobody would be evicted.
#[test]
fn a_hello_in_a_live_members_name_is_refused_even_with_a_valid_certificate() {
    use derecho_fabric::secure::{self, Credentials, GroupCa, Identity, Role, TlsCredentials};
    let ca = GroupCa::new("g", 1).unwrap();
    let creds = |id| {
        let i = ca.issue(&Identity::Member(id), 1).unwrap();
        Credentials::Certificate(Arc::new(
            TlsCredentials::from_pem(&ca.cert_pem(), &i.cert_pem, &i.key_pem).unwrap(),
        ))
    };
    let start_cert = |id| {
        let mut cfg = TcpConfig::new(id, any());
        cfg.credentials = creds(id);
        TcpFabric::start(cfg).unwrap()
    };
    let (a, b) = (start_cert(0), start_cert(1));
    let link = b
        .connect(0, a.local_addr().unwrap(), Duration::from_secs(5))
        .unwrap();
    let dst = a.register(RegionSpec::new(RegionId(700), 64)).unwrap();
    let src = b.register(RegionSpec::new(RegionId(701), 64)).unwrap();
    let remote = link
        .remote_region(dst.id(), Duration::from_secs(5))
        .unwrap();
    let write = |v: u64| {
        src.store_u64(0, v);
        link.write_signaled(&WriteRequest::mirrored(&src, &remote, 0, 8))
            .unwrap()
            .wait(Duration::from_secs(5))
            .unwrap();
        assert_eq!(dst.load_u64(0), v);
    };
    write(1);

    let tcp = TcpStream::connect(a.local_addr().unwrap()).unwrap();
    let (mut s, peer) = secure::connect(
        tcp,
        &creds(5),
        Role::Fabric,
        5,
        Some(0),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(peer.map(|p| p.id), Some(0));
    s.write_all(&hello(1, 1, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // A refusal (status code at bytes 6..8, 0 is "accepted"), or the connection closed.
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    assert!(
        answer.len() < 8 || answer[6..8] != [0, 0],
        "node 0 accepted a hello in node 1's name: {answer:?}"
    );
    // The real node 1's link is untouched.
    write(2);
    a.shutdown();
    b.shutdown();
}
