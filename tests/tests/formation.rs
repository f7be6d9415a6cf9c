//! Forming the first view over real sockets (in-process members).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use derecho::config::Config;
use derecho::gms::wire::{read_msg, write_msg};
use derecho::gms::{GmsMessage, LayoutFn, MemberInfo, Refusal};
use derecho::layout::{LayoutError, SubgroupId};
use derecho::multicast::{Mode, ShardSpec, SubgroupSpec};
use derecho::node::{GroupError, GroupNode};
use derecho_tests::cluster::test_sizes;

fn free_port() -> u16 {
    derecho_tests::ports::listen_port().unwrap()
}

/// A config for node `id` of a group whose contact is `contact_port`.
fn config(id: u32, contact_port: u16, gms_port: u16) -> Config {
    let mut c = Config::default();
    c.derecho.local_id = id;
    c.derecho.contact_port = contact_port;
    c.derecho.gms_port = gms_port;
    c.derecho.sst_port = free_port();
    c.derecho.state_transfer_port = free_port();
    c
}

/// One shard of exactly `n` members, all senders.
fn exactly(n: usize) -> LayoutFn {
    Arc::new(move |ids: &[u32], _previous| {
        if ids.len() < n {
            return Err(LayoutError::Inadequate {
                subgroup: SubgroupId(0),
                shard: 0,
                have: ids.len(),
                need: n,
            });
        }
        Ok(vec![SubgroupSpec {
            shards: vec![ShardSpec {
                members: ids[..n].to_vec(),
                senders: ids[..n].to_vec(),
                mode: Mode::Ordered,
                sizes: test_sizes(4),
            }],
        }])
    })
}

fn counter() -> (Arc<AtomicUsize>, derecho::multicast::DeliveryHandler) {
    let c = Arc::new(AtomicUsize::new(0));
    let c2 = Arc::clone(&c);
    (
        c,
        Box::new(move |_d| {
            c2.fetch_add(1, Ordering::SeqCst);
        }),
    )
}

fn wait_for(c: &AtomicUsize, n: usize) -> bool {
    for _ in 0..2000 {
        if c.load(Ordering::SeqCst) >= n {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

#[test]
fn a_single_node_group_forms_and_delivers_to_itself() {
    let port = free_port();
    let (count, deliver) = counter();
    let node = GroupNode::start(&config(0, port, port), exactly(1), deliver).unwrap();
    assert_eq!(node.view().ids(), vec![0]);
    for i in 0..20u8 {
        node.send(0, &[i; 40], Duration::from_secs(5)).unwrap();
    }
    node.send(0, &vec![7u8; 5000], Duration::from_secs(5))
        .unwrap();
    assert!(wait_for(&count, 21));
    node.shutdown();
}

#[test]
fn three_nodes_form_a_view_and_multicast() {
    let contact = free_port();
    let handles: Vec<_> = (0..3u32)
        .map(|id| {
            let cfg = config(id, contact, if id == 0 { contact } else { free_port() });
            std::thread::spawn(move || {
                let (count, deliver) = counter();
                let node = GroupNode::start(&cfg, exactly(3), deliver).unwrap();
                (node, count)
            })
        })
        .collect();
    let nodes: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let ids = nodes[0].0.view().ids();
    assert_eq!(ids.len(), 3);
    for (n, _) in &nodes {
        assert_eq!(n.view(), nodes[0].0.view(), "members disagree on the view");
    }
    std::thread::scope(|s| {
        for (n, _) in &nodes {
            s.spawn(move || {
                for i in 0..30u32 {
                    n.send(0, &i.to_le_bytes().repeat(30), Duration::from_secs(10))
                        .unwrap();
                }
            });
        }
    });
    for (_, c) in &nodes {
        assert!(
            wait_for(c, 90),
            "delivered {} of 90",
            c.load(Ordering::SeqCst)
        );
    }
    // A non-leader redirects joiners to the leader.
    let follower = &nodes.iter().find(|(n, _)| n.id() != ids[0]).unwrap().0;
    let gms = follower.view().members[follower.view().rank_of(follower.id()).unwrap()].gms_addr();
    let mut s = TcpStream::connect(gms).unwrap();
    let me = MemberInfo {
        id: 77,
        ip: "127.0.0.1".parse().unwrap(),
        gms_port: 1,
        fabric_port: 2,
        state_transfer_port: 3,
        external_port: 4,
    };
    write_msg(
        &mut s,
        &GmsMessage::Join {
            version: derecho::gms::PROTOCOL_VERSION,
            member: me,
        },
    )
    .unwrap();
    match read_msg(&mut s).unwrap() {
        GmsMessage::Redirect { leader, addr, .. } => {
            assert_eq!(leader, ids[0]);
            assert_eq!(addr.port(), contact);
        }
        other => panic!("expected a redirect, got {other:?}"),
    }
    for (n, _) in nodes {
        n.shutdown();
    }
}

#[test]
fn an_id_in_use_and_another_version_are_refused_and_garbage_is_ignored() {
    let contact = free_port();
    // The leader needs two members; it waits while we poke at its port.
    let leader = std::thread::spawn(move || {
        let (_c, deliver) = counter();
        GroupNode::start(&config(0, contact, contact), exactly(2), deliver)
    });
    std::thread::sleep(Duration::from_millis(300));
    // Garbage, and a connection that sends nothing, do not disturb the leader.
    let mut g = TcpStream::connect(("127.0.0.1", contact)).unwrap();
    g.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let _silent = TcpStream::connect(("127.0.0.1", contact)).unwrap();
    // Another protocol version.
    let mut v = TcpStream::connect(("127.0.0.1", contact)).unwrap();
    let me = MemberInfo {
        id: 5,
        ip: "127.0.0.1".parse().unwrap(),
        gms_port: 1,
        fabric_port: 2,
        state_transfer_port: 3,
        external_port: 4,
    };
    write_msg(
        &mut v,
        &GmsMessage::Join {
            version: 99,
            member: me,
        },
    )
    .unwrap();
    match read_msg(&mut v).unwrap() {
        GmsMessage::Refused(Refusal::VersionMismatch { expected })
            if expected == derecho::gms::PROTOCOL_VERSION => {}
        other => panic!("expected a version refusal, got {other:?}"),
    }
    // The leader's own id.
    let (_c, deliver) = counter();
    match GroupNode::start(&config(0, contact, free_port()), exactly(2), deliver) {
        Err(GroupError::Gms(e)) => assert!(e.to_string().contains("already in use"), "{e}"),
        other => panic!(
            "expected an id-in-use refusal, got {:?}",
            other.map(|n| n.id())
        ),
    }
    // A proper joiner still completes the group.
    let (_c, deliver) = counter();
    let joiner = GroupNode::start(&config(1, contact, free_port()), exactly(2), deliver).unwrap();
    let leader = leader.join().unwrap().unwrap();
    assert_eq!(leader.view().ids(), vec![0, 1]);
    let mut rest = Vec::new();
    let _ = g.read_to_end(&mut rest);
    joiner.shutdown();
    leader.shutdown();
}

/// The membership bounds come from the configuration: a joiner whose contact never answers
/// gives up after `join_timeout_ms`, with an error that says so.
#[test]
fn a_joiner_gives_up_after_the_configured_join_timeout() {
    // Bound and never accepted: connections are queued by the kernel but never answered.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let contact = silent.local_addr().unwrap().port();
    let mut cfg = config(1, contact, free_port());
    cfg.derecho.join_timeout_ms = 700;
    let (_c, deliver) = counter();
    let started = std::time::Instant::now();
    let r = GroupNode::start(&cfg, exactly(2), deliver);
    let took = started.elapsed();
    match r {
        Err(GroupError::Gms(e)) => assert!(e.to_string().contains("timed out"), "{e}"),
        other => panic!("expected a join timeout, got {:?}", other.map(|n| n.id())),
    }
    assert!(took < Duration::from_secs(10), "gave up after {took:?}");
}

/// Issue #16, bounded ports: the GMS port read one connection at a time, so each silent
/// connection held it for the whole handshake bound (5 s) and a probe or join behind seven of
/// them waited 35 s. Connections are now read in parallel, and at most
/// `MAX_HANDSHAKES_PER_PEER` at once from one address; the rest are closed at once.
#[test]
fn silent_connections_neither_delay_others_nor_pile_up_on_the_gms_port() {
    let contact = free_port();
    let (_c, deliver) = counter();
    let node = GroupNode::start(&config(0, contact, contact), exactly(1), deliver).unwrap();
    let per_peer = derecho::gms::MAX_HANDSHAKES_PER_PEER;
    let silent: Vec<TcpStream> = (0..per_peer - 1)
        .map(|_| TcpStream::connect(("127.0.0.1", contact)).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let asked = std::time::Instant::now();
    let mut probe = TcpStream::connect(("127.0.0.1", contact)).unwrap();
    probe
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write_msg(&mut probe, &GmsMessage::Probe).unwrap();
    match read_msg(&mut probe).unwrap() {
        GmsMessage::Running { vid, .. } => assert_eq!(vid, 0),
        other => panic!("expected the running group, got {other:?}"),
    }
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "the probe waited {took:?} behind silent connections"
    );
    // Beyond the per-address bound, connections are closed at once.
    let more: Vec<TcpStream> = (0..8)
        .map(|_| TcpStream::connect(("127.0.0.1", contact)).unwrap())
        .collect();
    let closed = more
        .into_iter()
        .filter(|s| {
            let mut s = s;
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let mut b = [0u8; 1];
            // Closed by the server: end of stream or a reset; a timeout means still held.
            match s.read(&mut b) {
                Ok(n) => n == 0,
                Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
            }
        })
        .count();
    assert!(
        closed >= 7,
        "only {closed} of 8 connections over the bound were closed"
    );
    drop(silent);
    node.shutdown();
}
