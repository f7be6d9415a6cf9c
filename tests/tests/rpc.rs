//! Replicated objects and RPC across in-process members over tcp: ordered updates with reply
//! maps, point-to-point queries from members and non-members, state transfer to a joiner,
//! a member removed while replies are pending, the external client, and bad input.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use derecho::config::Config;
use derecho::layout::{LayoutPolicy, SubgroupPolicy, TypePolicy};
use derecho::rpc::external::ExternalClient;
use derecho::rpc::p2p::Limits;
use derecho::rpc::{CallError, Group, GroupBuilder, LookupError, ReplyError, SendError, TooLarge};
use derecho_tests::kv::{Kv, KvQuery, KvReply, KvUpdate};
use derecho_tests::ports::{listen_port, local_member};

fn config(id: u32, contact: u16) -> Config {
    let mut c = local_member(id, contact).unwrap();
    c.derecho.sst_poll_cq_timeout_ms = 1000;
    c
}

/// Subgroup 0: one shard of two; subgroup 1: one shard of one or two.
fn policy() -> LayoutPolicy {
    LayoutPolicy {
        types: vec![TypePolicy::new(
            "Kv",
            vec![
                SubgroupPolicy::flexible_even(1, 2, 2),
                SubgroupPolicy::flexible_even(1, 1, 2),
            ],
        )],
    }
}

fn start(contact: u16, ids: std::ops::Range<u32>) -> Vec<(Config, Group)> {
    let handles: Vec<_> = ids
        .map(|id| {
            let cfg = config(id, contact);
            std::thread::spawn(move || {
                let g = GroupBuilder::new(&cfg)
                    .replicated::<Kv>("Kv", |_| Kv::default())
                    .layout(policy())
                    .timeout(Duration::from_secs(20))
                    .start()
                    .unwrap_or_else(|e| panic!("node {id}: {e}"));
                (cfg, g)
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn state(r: &KvReply) -> (u64, u64) {
    match r {
        KvReply::State {
            digest, applied, ..
        } => (*digest, *applied),
        other => panic!("expected a state, got {other:?}"),
    }
}

/// An ordered put of `key`; every replica's state after it, by node.
fn put_and_collect_states(h: &derecho::rpc::Subgroup<Kv>, key: &str) -> BTreeMap<u32, (u64, u64)> {
    h.ordered_send(&KvUpdate::Put(key.into(), vec![9]))
        .unwrap()
        .wait()
        .unwrap()
        .iter()
        .map(|(n, r)| (*n, state(r.as_ref().unwrap())))
        .collect()
}

#[test]
fn ordered_updates_queries_state_transfer_and_bad_input() {
    let contact = listen_port().unwrap();
    let mut nodes = start(contact, 0..3);
    nodes.sort_by_key(|(c, _)| c.derecho.local_id);
    let groups: Vec<&Group> = nodes.iter().map(|(_, g)| g).collect();
    // Roles follow join order: a and b hold subgroup 0, c holds subgroup 1 alone.
    let s0 = groups[0].subgroup::<Kv>(0).unwrap().shard_members();
    let s1 = groups[0].subgroup::<Kv>(1).unwrap().shard_members();
    assert_eq!((s0.len(), s0[0].len(), s1.len(), s1[0].len()), (1, 2, 1, 1));
    let (a, b, c) = (s0[0][0], s0[0][1], s1[0][0]);
    let g = |id: u32| groups[id as usize];
    let sg0 = g(a).subgroup::<Kv>(0).unwrap();

    // Concurrent ordered puts from both members of subgroup 0: every reply map has both
    // members, and each member's reply reflects the same order.
    std::thread::scope(|s| {
        for g in [g(a), g(b)] {
            s.spawn(move || {
                let h = g.subgroup::<Kv>(0).unwrap();
                for i in 0..100u32 {
                    let key = format!("k{}-{i}", g.my_id());
                    let replies = h
                        .ordered_send(&KvUpdate::Put(key, vec![i as u8; 1 + (i as usize % 50)]))
                        .unwrap()
                        .wait()
                        .unwrap();
                    assert_eq!(replies.len(), 2);
                    let states: Vec<(u64, u64)> = replies
                        .values()
                        .map(|r| state(r.as_ref().unwrap()))
                        .collect();
                    assert_eq!(states[0], states[1], "replicas diverged");
                }
            });
        }
    });
    let d0 = g(a)
        .subgroup::<Kv>(0)
        .unwrap()
        .with_local(|kv| (kv.digest, kv.applied));
    let d1 = g(b)
        .subgroup::<Kv>(0)
        .unwrap()
        .with_local(|kv| (kv.digest, kv.applied));
    assert_eq!(d0, d1);
    assert_eq!(d0.unwrap().1, 200);

    // Point-to-point queries: from a member and from a non-member (c).
    let from_c = g(c).subgroup::<Kv>(0).unwrap();
    assert_eq!(
        from_c
            .p2p_send(b, &KvQuery::Get(format!("k{a}-7")))
            .unwrap(),
        KvReply::Value(Some(vec![7; 8]))
    );
    assert_eq!(
        sg0.p2p_send(a, &KvQuery::Get("missing".into())).unwrap(),
        KvReply::Value(None)
    );
    // A non-member updates subgroup 0 through a member.
    let relayed = from_c
        .ordered_send_via(b, &KvUpdate::Put("via".into(), b"2".to_vec()))
        .unwrap();
    assert_eq!(relayed.len(), 2);

    // Bad input: a query to a node outside the subgroup or the view, an unknown subgroup, an
    // oversized update or query, a reply above max_reply_payload_size.
    assert!(matches!(
        from_c.p2p_send(c, &KvQuery::Digest),
        Err(CallError::NotMember { subgroup: 0, .. })
    ));
    assert!(matches!(
        from_c.p2p_send(9, &KvQuery::Digest),
        Err(CallError::NotInView { node: 9 })
    ));
    assert!(matches!(
        groups[0].subgroup::<Kv>(5),
        Err(LookupError::NoSuchSubgroup {
            index: 5,
            count: 2,
            ..
        })
    ));
    assert!(matches!(
        from_c.ordered_send(&KvUpdate::Put("x".into(), vec![])),
        Err(SendError::NotMember { subgroup: 0, .. })
    ));
    let big = sg0.ordered_send(&KvUpdate::Put("big".into(), vec![0; 1 << 20]));
    assert!(
        matches!(
            big,
            Err(SendError::TooLarge(TooLarge {
                limit: "max_payload_size",
                ..
            }))
        ),
        "{big:?}"
    );
    let bigq = from_c.p2p_send(a, &KvQuery::Get("q".repeat(100 << 10)));
    assert!(
        matches!(
            bigq,
            Err(CallError::TooLarge(TooLarge {
                limit: "max_p2p_request_payload_size",
                ..
            }))
        ),
        "{bigq:?}"
    );
    let echo = sg0
        .ordered_send(&KvUpdate::Echo(1 << 20))
        .unwrap()
        .wait()
        .unwrap();
    for r in echo.values() {
        let e = r.as_ref().unwrap_err().to_string();
        assert!(e.contains("max_reply_payload_size"), "{e}");
    }
    // The group still works after all of that.
    sg0.ordered_send(&KvUpdate::Put("after".into(), vec![1]))
        .unwrap()
        .wait()
        .unwrap();

    // An external client finds the members and queries them.
    let limits = Limits {
        request: 64 << 10,
        reply: 64 << 10,
        window: 4,
    };
    let ext_addr = SocketAddr::from(([127, 0, 0, 1], nodes[c as usize].0.derecho.external_port));
    let ext = ExternalClient::connect(ext_addr, limits, Duration::from_secs(10)).unwrap();
    let id0 = ext.subgroup_id("Kv", 0).unwrap();
    assert_eq!(
        ext.p2p_send::<Kv>(id0, a, &KvQuery::Get("via".into()))
            .unwrap(),
        KvReply::Value(Some(b"2".to_vec()))
    );
    let r = ext
        .ordered_send_via::<Kv>(id0, b, &KvUpdate::Put("ext".into(), vec![3]))
        .unwrap();
    assert_eq!(r.len(), 2);

    // c holds subgroup 1 alone; put something there, then a joiner (node 3) takes the
    // second seat of that shard and must receive the state before anything else.
    let sg1 = g(c).subgroup::<Kv>(1).unwrap();
    for i in 0..10u8 {
        sg1.ordered_send(&KvUpdate::Put(format!("s1-{i}"), vec![i]))
            .unwrap()
            .wait()
            .unwrap();
    }
    let before = sg1.with_local(|kv| (kv.digest, kv.applied)).unwrap();
    drop(groups);
    let joiner = start(contact, 3..4).pop().unwrap();
    let j1 = joiner.1.subgroup::<Kv>(1).unwrap();
    assert_eq!(j1.shard_members(), vec![vec![c, 3]]);
    assert_eq!(j1.with_local(|kv| (kv.digest, kv.applied)).unwrap(), before);
    // Subsequent updates reach both replicas in the same order.
    let states = put_and_collect_states(&j1, "after-join");
    assert_eq!(states.len(), 2);
    assert_eq!(states[&c], states[&3]);
    // The external client follows the view change.
    ext.refresh().unwrap();
    assert_eq!(
        ext.shard_members(ext.subgroup_id("Kv", 1).unwrap()),
        vec![vec![c, 3]]
    );
    nodes.push(joiner);
}

#[test]
fn a_member_removed_while_its_reply_is_pending_yields_removed_and_the_others_reply() {
    let contact = listen_port().unwrap();
    let handles: Vec<_> = (0..3u32)
        .map(|id| {
            let cfg = config(id, contact);
            std::thread::spawn(move || {
                let policy = LayoutPolicy {
                    types: vec![TypePolicy::new(
                        "Kv",
                        vec![SubgroupPolicy::flexible_even(1, 2, 3)],
                    )],
                };
                GroupBuilder::new(&cfg)
                    .replicated::<Kv>("Kv", move |_| Kv {
                        stalls: id == 2,
                        ..Kv::default()
                    })
                    .layout(policy)
                    .timeout(Duration::from_secs(20))
                    .start()
                    .unwrap_or_else(|e| panic!("node {id}: {e}"))
            })
        })
        .collect();
    let groups: Vec<Group> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let h0 = groups[0].subgroup::<Kv>(0).unwrap();
    let mut all = h0.shard_members().concat();
    all.sort_unstable();
    assert_eq!(all, vec![0, 1, 2]);
    let pending = h0.ordered_send(&KvUpdate::Stall(3000)).unwrap();
    // Node 2 is now stuck applying the update, before its reply; the application reports it.
    std::thread::sleep(Duration::from_millis(300));
    groups[0].node().report_failure(2).unwrap();
    let replies = pending.wait().unwrap();
    assert!(replies[&0].is_ok() && replies[&1].is_ok(), "{replies:?}");
    assert!(
        matches!(replies[&2], Err(ReplyError::Removed { node: 2 })),
        "{replies:?}"
    );
    // The survivors go on.
    let after = h0
        .ordered_send(&KvUpdate::Put("after".into(), vec![1]))
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(after.keys().copied().collect::<Vec<_>>(), vec![0, 1]);
    drop(nodes_keepalive(groups));
}

/// Starts `ids` (in parallel) with one subgroup of type `T` named `name`: one shard of
/// `shard.0` to `shard.1` members; `config` gives each node's configuration.
fn start_one_type<T: derecho::Replicated + Default>(
    contact: u16,
    name: &'static str,
    shard: (usize, usize),
    ids: std::ops::Range<u32>,
    config: fn(u32, u16) -> Config,
) -> Vec<Group> {
    let handles: Vec<_> = ids
        .map(|id| {
            let cfg = config(id, contact);
            std::thread::spawn(move || {
                let layout = LayoutPolicy {
                    types: vec![TypePolicy::new(
                        name,
                        vec![SubgroupPolicy::flexible_even(1, shard.0, shard.1)],
                    )],
                };
                GroupBuilder::new(&cfg)
                    .replicated::<T>(name, |_| T::default())
                    .layout(layout)
                    .timeout(Duration::from_secs(20))
                    .start()
                    .unwrap_or_else(|e| panic!("node {id}: {e}"))
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn nodes_keepalive(groups: Vec<Group>) -> Vec<Group> {
    groups
}

/// Issue #14, hole 6: replicas survive a stretch of inadequate views (no shards at all) and
/// the joiner that makes the group adequate again receives the state of a member that held it
/// before.
#[test]
fn replica_state_crosses_an_inadequate_view_to_the_joiner_that_ends_it() {
    let contact = listen_port().unwrap();
    let begin = |ids| start_one_type::<Kv>(contact, "Kv", (3, 3), ids, config);
    let groups = begin(0..3);
    let h0 = groups[0].subgroup::<Kv>(0).unwrap();
    for i in 0..20u8 {
        h0.ordered_send(&KvUpdate::Put(format!("k{i}"), vec![i]))
            .unwrap()
            .wait()
            .unwrap();
    }
    let before = h0.with_local(|kv| (kv.digest, kv.applied)).unwrap();
    groups[2].node().abort();
    let v1 = groups[0]
        .node()
        .wait_for_view(1, Duration::from_secs(20))
        .unwrap();
    assert!(!v1.is_adequate(), "{v1:?}");
    assert_eq!(v1.ids(), vec![0, 1]);
    let joiner = begin(3..4).pop().unwrap();
    let j = joiner.subgroup::<Kv>(0).unwrap();
    let mut members = j.shard_members().concat();
    members.sort_unstable();
    assert_eq!(members, vec![0, 1, 3]);
    assert_eq!(j.with_local(|kv| (kv.digest, kv.applied)).unwrap(), before);
    let states = put_and_collect_states(&j, "after");
    assert_eq!(states.len(), 3);
    assert!(states.values().all(|s| *s == states[&0]), "{states:?}");
    drop(nodes_keepalive(groups));
}

/// The replicated type these tests use passes the library's own check for user types.
#[test]
fn the_test_type_passes_check_replicated() {
    let updates: Vec<KvUpdate> = (0..20u8)
        .map(|i| KvUpdate::Put(format!("k{}", i % 7), vec![i; usize::from(i)]))
        .chain([KvUpdate::Echo(16)])
        .collect();
    let queries = [
        KvQuery::Get("k3".into()),
        KvQuery::Get("absent".into()),
        KvQuery::Digest,
    ];
    derecho::testing::check_replicated(Kv::default, &updates, &queries).unwrap();
}

/// How long [`SlowKv::save`] sleeps before writing its state, in milliseconds.
static SAVE_DELAY_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// [`Kv`] whose state transfer takes as long as [`SAVE_DELAY_MS`] says.
#[derive(Default)]
struct SlowKv(Kv);

impl derecho::Replicated for SlowKv {
    type Update = KvUpdate;
    type Query = KvQuery;
    type Reply = KvReply;
    fn apply(&mut self, update: KvUpdate) -> KvReply {
        self.0.apply(update)
    }
    fn query(&self, query: KvQuery) -> KvReply {
        self.0.query(query)
    }
    fn save(&self, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let ms = SAVE_DELAY_MS.load(std::sync::atomic::Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(ms));
        self.0.save(out)
    }
    fn load(&mut self, input: &mut dyn std::io::Read) -> std::io::Result<()> {
        self.0.load(input)
    }
}

/// Issue #14, hole 4: a state transfer longer than the view's set-up bound got the joiner and
/// its sender frozen by the members that waited at the start barrier, and the group stopped
/// as a minority. The transfer now happens after the barrier with heartbeats running: the
/// joiner is admitted with the state, and nobody is removed.
#[test]
fn a_state_transfer_longer_than_the_setup_bound_removes_nobody() {
    let contact = listen_port().unwrap();
    let begin = |ids| {
        start_one_type::<SlowKv>(contact, "SlowKv", (2, 3), ids, |id, contact| {
            let mut cfg = config(id, contact);
            cfg.derecho.view_change_setup_timeout_ms = 1000;
            cfg
        })
    };
    let groups = begin(0..2);
    let h0 = groups[0].subgroup::<SlowKv>(0).unwrap();
    for i in 0..10u8 {
        h0.ordered_send(&KvUpdate::Put(format!("k{i}"), vec![i]))
            .unwrap()
            .wait()
            .unwrap();
    }
    let before = h0.with_local(|kv| (kv.0.digest, kv.0.applied)).unwrap();
    // Two and a half set-up bounds.
    SAVE_DELAY_MS.store(2500, std::sync::atomic::Ordering::SeqCst);
    let joiner = begin(2..3).pop().unwrap();
    SAVE_DELAY_MS.store(0, std::sync::atomic::Ordering::SeqCst);
    let j = joiner.subgroup::<SlowKv>(0).unwrap();
    assert_eq!(
        j.with_local(|kv| (kv.0.digest, kv.0.applied)).unwrap(),
        before
    );
    // The sender installs the view when its transfer ends, just after the joiner does.
    for g in &groups {
        let v = g.node().wait_for_view(1, Duration::from_secs(20)).unwrap();
        assert_eq!((v.vid, v.ids()), (1, vec![0, 1, 2]), "{v:?}");
        assert!(g.node().stopped().is_none());
    }
    let h2 = joiner.subgroup::<SlowKv>(0).unwrap();
    let states: BTreeMap<u32, (u64, u64)> = h2
        .ordered_send(&KvUpdate::Put("after".into(), vec![9]))
        .unwrap()
        .wait()
        .unwrap()
        .iter()
        .map(|(n, r)| (*n, state(r.as_ref().unwrap())))
        .collect();
    assert_eq!(states.len(), 3);
    assert!(states.values().all(|s| *s == states[&0]), "{states:?}");
    drop(nodes_keepalive(groups));
}
