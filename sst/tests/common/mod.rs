//! Helpers shared by the integration tests: small clusters on the sim and tcp backends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use derecho_fabric::sim::{SimConfig, SimNet};
use derecho_fabric::tcp::{TcpConfig, TcpFabric};
use derecho_fabric::{Fabric, NodeId, RegionId};
use derecho_sst::{ArrayField, BytesField, Field, Member, Schema, SchemaBuilder, Sst, SstConfig};

/// The row used by most tests.
#[derive(Clone, Copy, Debug)]
pub struct Row {
    pub counter: Field<u64>,
    pub flag: Field<bool>,
    pub signed: Field<i32>,
    pub vec: ArrayField<i64>,
    pub slots: BytesField,
}

pub const SLOT: usize = 64;
pub const NSLOTS: usize = 32;

pub fn schema() -> (Schema, Row) {
    let mut b = SchemaBuilder::new();
    let row = Row {
        counter: b.field("counter"),
        flag: b.field("flag"),
        signed: b.field("signed"),
        vec: b.array("vec", 4),
        slots: b.bytes("slots", SLOT * NSLOTS),
    };
    (b.build().unwrap(), row)
}

pub const TABLE: RegionId = RegionId(0x5354_0001);

/// Node ids differ from ranks so that mixing them up shows.
pub fn id_of(rank: usize) -> NodeId {
    10 + rank as NodeId
}

pub fn nowhere() -> SocketAddr {
    "127.0.0.1:1".parse().unwrap()
}

/// A sim cluster of `n` connected tables.
pub fn sim_cluster(n: usize, seed: u64, config: SstConfig) -> (Arc<SimNet>, Vec<Arc<Sst>>, Row) {
    sim_cluster_on(SimConfig::new(seed), n, config)
}

/// A sim cluster of `n` connected tables on a network with the given settings.
pub fn sim_cluster_on(
    net_config: SimConfig,
    n: usize,
    config: SstConfig,
) -> (Arc<SimNet>, Vec<Arc<Sst>>, Row) {
    let net = SimNet::new(net_config);
    let fabrics: Vec<Arc<dyn Fabric>> = (0..n)
        .map(|r| net.add_node(id_of(r)) as Arc<dyn Fabric>)
        .collect();
    let members: Vec<Member> = (0..n).map(|r| Member::new(id_of(r), nowhere())).collect();
    let (schema, row) = schema();
    let tables: Vec<Arc<Sst>> = fabrics
        .iter()
        .enumerate()
        .map(|(r, f)| {
            Sst::prepare(
                Arc::clone(f),
                &members,
                r,
                schema.clone(),
                TABLE,
                config.clone(),
            )
            .unwrap()
        })
        .collect();
    for t in &tables {
        t.connect(Duration::from_secs(1)).unwrap();
    }
    (net, tables, row)
}

/// A tcp cluster of `n` tables in this process (one fabric each), built concurrently.
pub struct TcpCluster {
    pub fabrics: Vec<TcpFabric>,
    pub tables: Vec<Arc<Sst>>,
    pub row: Row,
}

impl Drop for TcpCluster {
    fn drop(&mut self) {
        for f in &self.fabrics {
            f.shutdown();
        }
    }
}

pub fn tcp_cluster(n: usize, config: SstConfig) -> TcpCluster {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let fabrics: Vec<TcpFabric> = (0..n)
        .map(|r| TcpFabric::start(TcpConfig::new(id_of(r), any)).unwrap())
        .collect();
    let members: Vec<Member> = fabrics
        .iter()
        .enumerate()
        .map(|(r, f)| Member::new(id_of(r), f.local_addr().unwrap()))
        .collect();
    let (schema, row) = schema();
    let slots: Vec<Mutex<Option<Arc<Sst>>>> = (0..n).map(|_| Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for (r, f) in fabrics.iter().enumerate() {
            let (members, schema, config, slot) = (&members, &schema, &config, &slots[r]);
            s.spawn(move || {
                let sst = Sst::prepare(
                    Arc::new(f.clone()),
                    members,
                    r,
                    schema.clone(),
                    TABLE,
                    config.clone(),
                )
                .unwrap();
                sst.connect(Duration::from_secs(20)).unwrap();
                *slot.lock().unwrap() = Some(sst);
            });
        }
    });
    let tables = slots
        .into_iter()
        .map(|s| s.into_inner().unwrap().unwrap())
        .collect();
    TcpCluster {
        fabrics,
        tables,
        row,
    }
}

/// Collects failure upcalls of one table.
pub fn record_failures(sst: &Sst) -> Arc<Mutex<Vec<(NodeId, String)>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = Arc::clone(&seen);
    sst.on_failure(move |node, reason| s.lock().unwrap().push((node, reason.to_string())));
    seen
}

/// The payload pattern of slot `i` for counter value `c` (never zero).
pub fn pattern(c: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|j| ((c as usize * 31 + j * 7) % 251 + 1) as u8)
        .collect()
}
