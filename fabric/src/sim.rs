//! The sim backend: every node of a group in one process, on a virtual clock, deterministic for
//! a seed.
//!
//! A [`SimNet`] holds the nodes, the links between them and a queue of timed events. A write
//! copies its source bytes when posted and becomes an event that applies them at
//! `now + delay (+ jitter)`, never earlier than the previous write on the same link, so per-link
//! order holds exactly as on a real backend. Nothing happens until the test advances the network
//! ([`SimNet::step`], [`SimNet::run_for`], [`SimNet::run_until`]); a blocking wait on a
//! [`crate::Completion`] advances it by itself. Faults:
//!
//! * [`SimNet::set_delay`]: per directed link delay;
//! * [`SimNet::cut`]: the link silently drops everything from now on (a partition: only
//!   timeouts reveal it);
//! * [`SimNet::break_link`]: both ends see the link fail (a reset connection);
//! * [`SimNet::crash`]: the node stops; writes to it vanish and each peer's link to it fails
//!   after [`SimConfig::crash_detection`].
//!
//! Everything that is iterated is kept in ordered maps, and randomness comes from a seeded
//! generator, so a run is a pure function of the seed and of the calls made.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::failure::FailureHub;
use crate::sync::lock;
use crate::{
    Completion, CompletionSource, Fabric, FabricError, FailureHandler, Link, Misaddress, NodeId,
    Notification, Region, RegionId, RegionSpec, RemoteRegion, SubscriptionId, WriteRequest,
};

/// Settings of a simulated network.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seed of every random choice.
    pub seed: u64,
    /// One-way delay of every link unless changed with [`SimNet::set_delay`] (default 5 µs).
    pub delay: Duration,
    /// Uniform extra delay in `[0, jitter]` per write (default 2 µs).
    pub jitter: Duration,
    /// Time after a crash until the crashed node's peers see their links fail (default 1 ms).
    pub crash_detection: Duration,
}

impl SimConfig {
    /// Defaults with the given seed.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            delay: Duration::from_micros(5),
            jitter: Duration::from_micros(2),
            crash_detection: Duration::from_millis(1),
        }
    }
}

/// A small, fast, seedable generator (splitmix64); enough for delays and test workloads.
#[derive(Clone, Debug)]
pub struct SimRng(u64);

impl SimRng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `[0, bound)` (0 when `bound` is 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            0
        } else {
            self.next_u64() % bound
        }
    }
}

#[derive(Debug)]
enum EventKind {
    Apply {
        from: NodeId,
        to: NodeId,
        key: u64,
        offset: usize,
        data: Vec<u8>,
        imm: Option<u32>,
        signaled_count: Option<u64>,
    },
    Ack {
        from: NodeId,
        to: NodeId,
        count: u64,
    },
    Fail {
        node: NodeId,
        peer: NodeId,
        reason: String,
    },
}

#[derive(Debug)]
struct Event {
    at: u64,
    seq: u64,
    kind: EventKind,
}

impl PartialEq for Event {
    fn eq(&self, o: &Self) -> bool {
        (self.at, self.seq) == (o.at, o.seq)
    }
}
impl Eq for Event {}
impl PartialOrd for Event {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Event {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.at, self.seq).cmp(&(o.at, o.seq))
    }
}

#[derive(Debug, Default)]
struct DirLink {
    delay: Option<u64>,
    cut: bool,
    failed: Option<String>,
    issued: u64,
    applied: u64,
    acked: u64,
    last_arrival: u64,
}

struct SimNode {
    crashed: bool,
    regions: BTreeMap<u64, Arc<Region>>,
    by_id: BTreeMap<RegionId, u64>,
    next_key: u64,
    failures: Arc<FailureHub>,
}

struct SimState {
    now: u64,
    seq: u64,
    rng: SimRng,
    config: SimConfig,
    queue: BinaryHeap<Reverse<Event>>,
    nodes: BTreeMap<NodeId, SimNode>,
    links: BTreeMap<(NodeId, NodeId), DirLink>,
}

impl SimState {
    fn push(&mut self, at: u64, kind: EventKind) {
        self.seq += 1;
        self.queue.push(Reverse(Event {
            at,
            seq: self.seq,
            kind,
        }));
    }

    fn link_failure(&self, from: NodeId, to: NodeId) -> Option<String> {
        if self.nodes.get(&from).is_none_or(|n| n.crashed) {
            return Some("this node has crashed".into());
        }
        self.links.get(&(from, to)).and_then(|l| l.failed.clone())
    }

    /// Marks both directions failed and schedules the reports.
    fn fail_pair(&mut self, a: NodeId, b: NodeId, reason: &str, after: u64) {
        for (x, y) in [(a, b), (b, a)] {
            let l = self.links.entry((x, y)).or_default();
            if l.failed.is_none() {
                l.failed = Some(reason.to_string());
                let at = self.now + after;
                let crashed = self.nodes.get(&x).is_none_or(|n| n.crashed);
                if !crashed {
                    self.push(
                        at,
                        EventKind::Fail {
                            node: x,
                            peer: y,
                            reason: reason.to_string(),
                        },
                    );
                }
            }
        }
    }
}

/// A simulated network of nodes in one process.
pub struct SimNet {
    state: Mutex<SimState>,
    me: Weak<SimNet>,
}

impl std::fmt::Debug for SimNet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = lock(&self.state);
        f.debug_struct("SimNet")
            .field("now_ns", &s.now)
            .field("nodes", &s.nodes.len())
            .field("queued", &s.queue.len())
            .finish()
    }
}

impl SimNet {
    /// A network with no nodes.
    pub fn new(config: SimConfig) -> Arc<Self> {
        Arc::new_cyclic(|me| SimNet {
            state: Mutex::new(SimState {
                now: 0,
                seq: 0,
                rng: SimRng::new(config.seed),
                config,
                queue: BinaryHeap::new(),
                nodes: BTreeMap::new(),
                links: BTreeMap::new(),
            }),
            me: me.clone(),
        })
    }

    /// Adds node `id` and returns its fabric.
    pub fn add_node(self: &Arc<Self>, id: NodeId) -> Arc<SimFabric> {
        let mut s = lock(&self.state);
        let seed_key = s.rng.next_u64() | 1;
        s.nodes.insert(
            id,
            SimNode {
                crashed: false,
                regions: BTreeMap::new(),
                by_id: BTreeMap::new(),
                next_key: seed_key,
                failures: Arc::new(FailureHub::default()),
            },
        );
        Arc::new(SimFabric {
            net: Arc::clone(self),
            id,
        })
    }

    /// Current virtual time.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(lock(&self.state).now)
    }

    /// Number of queued events.
    pub fn pending_events(&self) -> usize {
        lock(&self.state).queue.len()
    }

    /// Sets the one-way delay of the directed link `from → to`.
    pub fn set_delay(&self, from: NodeId, to: NodeId, delay: Duration) {
        lock(&self.state).links.entry((from, to)).or_default().delay = Some(nanos(delay));
    }

    /// Silently drops everything on the link between `a` and `b`, both ways, from now on.
    pub fn cut(&self, a: NodeId, b: NodeId) {
        let mut s = lock(&self.state);
        s.links.entry((a, b)).or_default().cut = true;
        s.links.entry((b, a)).or_default().cut = true;
    }

    /// Fails the link between `a` and `b`; both ends are told at once.
    pub fn break_link(&self, a: NodeId, b: NodeId) {
        lock(&self.state).fail_pair(a, b, "link broken", 0);
    }

    /// Crashes `node`: it applies nothing more, and each peer's link to it fails after the
    /// configured detection delay.
    pub fn crash(&self, node: NodeId) {
        let mut s = lock(&self.state);
        let after = nanos(s.config.crash_detection);
        let Some(n) = s.nodes.get_mut(&node) else {
            return;
        };
        n.crashed = true;
        let peers: Vec<NodeId> = s.nodes.keys().copied().filter(|p| *p != node).collect();
        for p in peers {
            s.fail_pair(node, p, &format!("node {node} crashed"), after);
        }
    }

    /// Processes the next event, moving time forward to it. Returns false if none is queued.
    pub fn step(&self) -> bool {
        let (event, reports) = {
            let mut s = lock(&self.state);
            let Some(Reverse(ev)) = s.queue.pop() else {
                return false;
            };
            s.now = s.now.max(ev.at);
            let reports = Self::apply(&mut s, ev.kind);
            (true, reports)
        };
        // Failure handlers run without the lock so they may call back into the network.
        if let Some((hub, peer, reason)) = reports {
            hub.report(peer, &reason);
        }
        event
    }

    /// Processes every event due within `d`, then sets the clock to `now + d`.
    pub fn run_for(&self, d: Duration) {
        let end = lock(&self.state).now + nanos(d);
        loop {
            let next = lock(&self.state).queue.peek().map(|Reverse(e)| e.at);
            match next {
                Some(at) if at <= end => {
                    self.step();
                }
                _ => break,
            }
        }
        let mut s = lock(&self.state);
        s.now = s.now.max(end);
    }

    /// Processes events until `cond` holds (checked before the first and after each event) or
    /// virtual time passes `timeout` from now. Returns whether `cond` held.
    pub fn run_until(&self, timeout: Duration, cond: &mut dyn FnMut() -> bool) -> bool {
        let end = lock(&self.state).now + nanos(timeout);
        loop {
            if cond() {
                return true;
            }
            let next = lock(&self.state).queue.peek().map(|Reverse(e)| e.at);
            match next {
                Some(at) if at <= end => {
                    self.step();
                }
                _ => {
                    let mut s = lock(&self.state);
                    s.now = s.now.max(end);
                    drop(s);
                    return cond();
                }
            }
        }
    }

    /// Runs until no event is queued (bounded by `max_events`). Returns the number processed.
    pub fn run_until_idle(&self, max_events: usize) -> usize {
        let mut n = 0;
        while n < max_events && self.step() {
            n += 1;
        }
        n
    }

    fn apply(s: &mut SimState, kind: EventKind) -> Option<(Arc<FailureHub>, NodeId, String)> {
        match kind {
            EventKind::Apply {
                from,
                to,
                key,
                offset,
                data,
                imm,
                signaled_count,
            } => {
                let link = s.links.entry((from, to)).or_default();
                if link.cut || link.failed.is_some() {
                    return None;
                }
                link.applied += 1;
                let count = link.applied;
                let node = s.nodes.get(&to)?;
                if node.crashed {
                    return None;
                }
                if let Some(region) = node.regions.get(&key) {
                    if region.write(offset, &data).is_ok() {
                        if let Some(imm) = imm {
                            let n = Notification {
                                from,
                                imm,
                                len: data.len(),
                            };
                            if !region.push_notification(n, &|| true) {
                                tracing::warn!(to, "sim: notification queue full; dropped");
                            }
                        }
                        region.ring();
                    }
                }
                if signaled_count.is_some() {
                    let delay = s.links.get(&(to, from)).and_then(|l| l.delay);
                    let delay = delay.unwrap_or(nanos(s.config.delay));
                    let at = s.now + delay;
                    s.push(at, EventKind::Ack { from, to, count });
                }
                None
            }
            EventKind::Ack { from, to, count } => {
                let back_cut = s.links.get(&(to, from)).is_some_and(|l| l.cut);
                if !back_cut {
                    let l = s.links.entry((from, to)).or_default();
                    l.acked = l.acked.max(count);
                }
                None
            }
            EventKind::Fail { node, peer, reason } => {
                let n = s.nodes.get(&node)?;
                if n.crashed {
                    return None;
                }
                Some((Arc::clone(&n.failures), peer, reason))
            }
        }
    }

    fn post(
        &self,
        from: NodeId,
        to: NodeId,
        req: &WriteRequest<'_>,
        signaled: bool,
    ) -> Result<u64, FabricError> {
        let mut s = lock(&self.state);
        if let Some(reason) = s.link_failure(from, to) {
            return Err(FabricError::LinkFailed { peer: to, reason });
        }
        req.validate(to)?;
        let mut data = vec![0u8; req.len];
        req.src.read(req.src_offset, &mut data)?;
        let base = s.config.delay;
        let jitter = nanos(s.config.jitter);
        let extra = s.rng.below(jitter + 1);
        let now = s.now;
        let link = s.links.entry((from, to)).or_default();
        let delay = link.delay.unwrap_or(nanos(base));
        let at = (now + delay + extra).max(link.last_arrival);
        link.last_arrival = at;
        link.issued += 1;
        let ticket = link.issued;
        s.push(
            at,
            EventKind::Apply {
                from,
                to,
                key: req.dst.key,
                offset: req.dst_offset,
                data,
                imm: req.imm,
                signaled_count: signaled.then_some(ticket),
            },
        );
        Ok(ticket)
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One node's view of a [`SimNet`].
pub struct SimFabric {
    net: Arc<SimNet>,
    id: NodeId,
}

impl std::fmt::Debug for SimFabric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimFabric").field("id", &self.id).finish()
    }
}

impl SimFabric {
    /// The network this node belongs to.
    pub fn net(&self) -> &Arc<SimNet> {
        &self.net
    }

    fn hub(&self) -> Option<Arc<FailureHub>> {
        lock(&self.net.state)
            .nodes
            .get(&self.id)
            .map(|n| Arc::clone(&n.failures))
    }
}

impl Fabric for SimFabric {
    fn local_id(&self) -> NodeId {
        self.id
    }

    fn backend(&self) -> &'static str {
        "sim"
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }

    fn register(&self, spec: RegionSpec) -> Result<Arc<Region>, FabricError> {
        let mut s = lock(&self.net.state);
        let node = s.nodes.get_mut(&self.id).ok_or(FabricError::Shutdown)?;
        if node.crashed {
            return Err(FabricError::Shutdown);
        }
        if node.by_id.contains_key(&spec.id) {
            return Err(FabricError::DuplicateRegion(spec.id));
        }
        let key = node.next_key;
        node.next_key = node.next_key.wrapping_add(2);
        let region = Arc::new(Region::allocate(self.id, &spec, key)?);
        node.regions.insert(key, Arc::clone(&region));
        node.by_id.insert(spec.id, key);
        Ok(region)
    }

    fn deregister(&self, id: RegionId) -> Result<(), FabricError> {
        let mut s = lock(&self.net.state);
        if let Some(node) = s.nodes.get_mut(&self.id) {
            if let Some(key) = node.by_id.remove(&id) {
                node.regions.remove(&key);
            }
        }
        Ok(())
    }

    fn connect(
        &self,
        peer: NodeId,
        _addr: SocketAddr,
        _timeout: Duration,
    ) -> Result<Arc<dyn Link>, FabricError> {
        if peer == self.id {
            return Err(FabricError::Misaddressed(Misaddress::SelfLink));
        }
        let s = lock(&self.net.state);
        if !s.nodes.contains_key(&peer) {
            return Err(FabricError::Connect {
                peer,
                reason: "no such node in the simulated network".into(),
            });
        }
        if let Some(reason) = s.link_failure(self.id, peer) {
            return Err(FabricError::Connect { peer, reason });
        }
        drop(s);
        Ok(Arc::new(SimLink {
            net: Arc::clone(&self.net),
            from: self.id,
            to: peer,
        }))
    }

    fn link(&self, peer: NodeId) -> Option<Arc<dyn Link>> {
        let s = lock(&self.net.state);
        (peer != self.id && s.nodes.contains_key(&peer)).then(|| {
            Arc::new(SimLink {
                net: Arc::clone(&self.net),
                from: self.id,
                to: peer,
            }) as Arc<dyn Link>
        })
    }

    fn subscribe_failures(&self, handler: FailureHandler) -> SubscriptionId {
        match self.hub() {
            Some(h) => h.subscribe(handler),
            None => SubscriptionId(u64::MAX),
        }
    }

    fn unsubscribe_failures(&self, id: SubscriptionId) {
        if let Some(h) = self.hub() {
            h.unsubscribe(id);
        }
    }

    fn now(&self) -> Duration {
        self.net.now()
    }

    fn shutdown(&self) {
        self.net.crash(self.id);
    }
}

/// A directed link of the simulated network.
#[derive(Clone)]
pub struct SimLink {
    net: Arc<SimNet>,
    from: NodeId,
    to: NodeId,
}

impl std::fmt::Debug for SimLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimLink")
            .field("from", &self.from)
            .field("to", &self.to)
            .finish()
    }
}

impl Link for SimLink {
    fn peer(&self) -> NodeId {
        self.to
    }

    fn remote_region(&self, id: RegionId, _timeout: Duration) -> Result<RemoteRegion, FabricError> {
        let s = lock(&self.net.state);
        if let Some(reason) = s.link_failure(self.from, self.to) {
            return Err(FabricError::LinkFailed {
                peer: self.to,
                reason,
            });
        }
        let node = s.nodes.get(&self.to).ok_or(FabricError::NoSuchRegion {
            peer: self.to,
            region: id,
        })?;
        let key = node.by_id.get(&id).ok_or(FabricError::NoSuchRegion {
            peer: self.to,
            region: id,
        })?;
        let len = node.regions.get(key).map_or(0, |r| r.len());
        Ok(RemoteRegion {
            owner: self.to,
            id,
            len,
            key: *key,
            addr: 0,
        })
    }

    fn write(&self, req: &WriteRequest<'_>) -> Result<(), FabricError> {
        self.net.post(self.from, self.to, req, false).map(|_| ())
    }

    fn write_signaled(&self, req: &WriteRequest<'_>) -> Result<Completion, FabricError> {
        let ticket = self.net.post(self.from, self.to, req, true)?;
        Ok(Completion::new(Arc::new(self.clone()), ticket))
    }

    fn failure(&self) -> Option<String> {
        lock(&self.net.state).link_failure(self.from, self.to)
    }

    fn fail(&self, reason: &str) {
        lock(&self.net.state).fail_pair(self.from, self.to, reason, 0);
    }
}

impl CompletionSource for SimLink {
    fn poll_ticket(&self, ticket: u64) -> Option<Result<(), FabricError>> {
        let s = lock(&self.net.state);
        if s.links
            .get(&(self.from, self.to))
            .is_some_and(|l| l.acked >= ticket)
        {
            return Some(Ok(()));
        }
        s.link_failure(self.from, self.to).map(|reason| {
            Err(FabricError::LinkFailed {
                peer: self.to,
                reason,
            })
        })
    }

    fn wait_ticket(&self, ticket: u64, timeout: Duration) -> Result<(), FabricError> {
        let Some(net) = self.net.me.upgrade() else {
            return Err(FabricError::Shutdown);
        };
        let mut outcome = None;
        net.run_until(timeout, &mut || {
            outcome = self.poll_ticket(ticket);
            outcome.is_some()
        });
        outcome.unwrap_or_else(|| {
            Err(FabricError::Timeout {
                what: format!("completion of a write to node {}", self.to),
                after: timeout,
            })
        })
    }
}
