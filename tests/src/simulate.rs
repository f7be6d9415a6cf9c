//! A seeded simulation of a group through several view changes, on one thread.
//!
//! Every member runs the real multicast engine, SST, RDMC engines and change protocol over the
//! sim fabric and virtual time, and the view manager's real decisions: each member turns its
//! outcome into the next view with [`derecho::testing::membership::after`] (which runs the layout,
//! adequate or not), and joiners are admitted by [`derecho::testing::membership::admit`]. The driver
//! here carries those decisions out (sends the member's trimmed messages first in the next
//! view, builds the view's multicast phase by phase) and plays the application (random
//! senders). One `u64` seed draws everything:
//!
//! * the **shape**: members (2–9), how many of them send, the window, the SMC slot size and the
//!   RDMC block size (messages travel both ways), and how many view changes the run makes;
//! * the **network**: per-link one-way delays (asymmetric, some longer than failure detection),
//!   which reorder writes across links and never within one;
//! * the **faults**, one per view change: a crash (of the leader or another member), a second
//!   crash during the change, a member cut off from the others, a graceful leave, one or two
//!   joins at the leader, and a join whose proposing leader crashes at once.
//!
//! Each run has a safety phase (traffic and faults) and a liveness phase (the faults stop, the
//! senders stop, and every message a member still in the group sent must be delivered by every
//! member still in the group within a bound). The members' records then go through the
//! [`Checker`] with every property on: one membership per view id, total order, virtual
//! synchrony, integrity, stability, completeness and per-sender FIFO across views.
//!
//! A run is a pure function of its seed: [`run_seed`] returns a hash of everything that
//! happened, and running a seed twice must give the same hash.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use derecho::gms::{LayoutFn, MemberInfo, View, PROTOCOL_VERSION};
use derecho::layout::{LayoutError, SubgroupId};
use derecho::multicast::{
    Mode, MulticastConfig, MulticastError, MulticastGroup, Resend, ShardSpec, Sizes, SubgroupSpec,
};
use derecho::testing::membership::{
    admit, after, owed_after_trim, Admission, ChangeProtocol, JoinQueue, Outcome, Step,
};
use derecho_fabric::sim::{SimConfig, SimFabric, SimNet, SimRng};
use derecho_fabric::sync::lock;
use derecho_fabric::Fabric;

use crate::checker::{digest, first_delivery_views, Checker, Event, MemberLog, MessageId, Report};

/// Node ids given to joiners start here.
const FIRST_JOINER: u32 = 100;

/// Steps one view may take to end once its fault struck, before the run counts as stuck.
const VIEW_END_STEPS: u64 = 400_000;

/// Steps the liveness phase may take to deliver everything.
const DRAIN_STEPS: u64 = 400_000;

/// What a seed draws for the group.
#[derive(Clone, Debug)]
pub struct Shape {
    /// Members of the first view.
    pub members: usize,
    /// Senders among them (the first ones); joiners always send.
    pub senders: usize,
    /// Message sizes and window.
    pub sizes: Sizes,
    /// View changes the run makes (fewer if too few members are left).
    pub changes: usize,
    /// Whether links get drawn one-way delays.
    pub skewed_links: bool,
    /// Fewest members that provision the shard (0: any number does). A view with fewer is
    /// inadequate: it has no subgroups and runs only the change protocol until joins make a
    /// later view adequate.
    pub need: usize,
}

impl Shape {
    /// The shape seed `seed` draws from `rng` (a generator seeded with it).
    pub fn draw(seed: u64, rng: &mut SimRng) -> Self {
        let members = 2 + rng.below(8) as usize;
        let senders = 1 + rng.below(members as u64) as usize;
        let window = 2 + rng.below(11) as usize;
        let smc = 128 << rng.below(4);
        let block = 1024 << rng.below(3);
        let sizes = Sizes::from_profile(&derecho::config::SubgroupProfile {
            max_payload_size: 32 * 1024,
            max_smc_payload_size: smc as u64,
            block_size: block as u64,
            window_size: window as u32,
            ..derecho::config::SubgroupProfile::default()
        });
        let changes = 1 + rng.below(3) as usize;
        let skewed_links = rng.below(2) == 0;
        // Drawn from a stream of its own, so that adding it changed no other draw of a seed.
        let mut own = SimRng::new(seed ^ NEED_STREAM);
        let need = if members >= 3 && own.below(3) == 0 {
            members - own.below(2) as usize
        } else {
            0
        };
        Self {
            members,
            senders,
            sizes,
            changes,
            skewed_links,
            need,
        }
    }
}

/// Mixed into the seed for the stream that draws [`Shape::need`].
const NEED_STREAM: u64 = 0x6e65_6564_5f73_6861;

/// A fault that ends a view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// These ranks crash: the first at the drawn moment, the others once the change is under
    /// way on some member.
    Crash(Vec<usize>),
    /// Every link of this rank breaks: it is cut off from the others.
    Isolate(usize),
    /// This rank leaves gracefully.
    Leave(usize),
    /// These new nodes ask the leader to join.
    Join(Vec<u32>),
    /// This new node asks the leader to join; the leader crashes as soon as another member has
    /// taken its proposal.
    JoinThenLeaderCrash(u32),
    /// The first member suspects the second, which is alive (a false suspicion, as after a
    /// long pause): the second must stop and the others go on without it.
    FalseSuspicion(usize, usize),
    /// This member of a decided view crashes before the view is set up; the view must start
    /// without it and its change protocol remove it.
    CrashBeforeSetup(u32),
    /// The network splits the members of a decided view into these two sides before the view
    /// is set up (the links between them silently drop everything): a minority side must stop,
    /// a majority side must go on alone.
    PartitionBeforeSetup(Vec<u32>, Vec<u32>),
}

/// What one seed did.
#[derive(Clone, Debug)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// The shape it drew.
    pub shape: String,
    /// The faults, one per view change.
    pub faults: Vec<Fault>,
    /// Views installed by the longest-lived member.
    pub views: usize,
    /// Deliveries checked.
    pub delivered: usize,
    /// Members in the group at the end (none when the faults left no majority: partition
    /// safety then stops every member).
    pub stayed: usize,
    /// The first violation, if any.
    pub failure: Option<String>,
    /// A hash of every event of the run, the same whenever the seed runs.
    pub trace: u64,
}

/// One member while it runs.
struct Member {
    id: u32,
    fabric: Arc<SimFabric>,
    log: Arc<Mutex<MemberLog>>,
    joins: JoinQueue,
    outcome: Arc<Mutex<Option<Outcome>>>,
    group: Option<Arc<MulticastGroup>>,
    /// Trimmed messages the next view must take first, oldest first.
    owed: Vec<Resend>,
    next_serial: u64,
}

impl Member {
    fn new(id: u32, fabric: Arc<SimFabric>, log: Arc<Mutex<MemberLog>>) -> Self {
        Self {
            id,
            fabric,
            log,
            joins: Arc::new(Mutex::new(Vec::new())),
            outcome: Arc::new(Mutex::new(None)),
            group: None,
            owed: Vec::new(),
            next_serial: 0,
        }
    }
}

/// FNV-1a over a stream of words: the run's trace hash.
struct Trace(u64);

impl Trace {
    fn add(&mut self, word: u64) {
        for b in word.to_le_bytes() {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Runs one seed and checks it.
pub fn run_seed(seed: u64) -> SeedResult {
    let mut rng = SimRng::new(seed);
    let shape = Shape::draw(seed, &mut rng);
    let mut sim = Sim::new(seed, shape.clone(), rng);
    let failure = sim.run().err();
    lock(&sim.registry).clear();
    let failure = failure.or_else(|| lock(&sim.unstable).take());
    let logs: Vec<MemberLog> = sim.all.iter().map(|m| lock(&m.log).clone()).collect();
    let mut trace = Trace(0xcbf2_9ce4_8422_2325);
    for l in &logs {
        trace.add(u64::from(l.node));
        for e in &l.events {
            trace.add(digest(format!("{e:?}").as_bytes()));
        }
    }
    trace.add(u64::try_from(sim.net.now().as_nanos()).unwrap_or(u64::MAX));
    let report = match &failure {
        Some(_) => None,
        None => Some(
            Checker::new()
                .expect_sender_fifo()
                .complete_for(sim.stayed.clone(), sim.failed.clone())
                .check(&logs),
        ),
    };
    let (views, delivered) = report.as_ref().map_or((0, 0), |r| (r.views, r.delivered));
    let failure = failure.or_else(|| report.and_then(|r: Report| r.violation));
    SeedResult {
        seed,
        shape: format!(
            "members={} senders={} window={} smc={} block={} changes={} skewed={} need={}",
            shape.members,
            shape.senders,
            shape.sizes.window,
            shape.sizes.max_smc_payload,
            shape.sizes.block_size,
            shape.changes,
            shape.skewed_links,
            shape.need
        ),
        faults: sim.faults,
        views,
        delivered,
        stayed: sim.stayed.len(),
        failure,
        trace: trace.0,
    }
}

/// The state of one simulated run.
struct Sim {
    seed: u64,
    shape: Shape,
    rng: SimRng,
    net: Arc<SimNet>,
    /// Every member that ever existed, by join order.
    all: Vec<Member>,
    /// Indexes into `all` of the current view's members, in rank order.
    view: Vec<usize>,
    vid: u64,
    /// The current view, as every member of it computed it.
    current: View,
    /// Divides a membership into the one shard (see [`layout`]).
    layout: LayoutFn,
    faults: Vec<Fault>,
    /// Members still in the group at the end.
    stayed: BTreeSet<u32>,
    /// Members that crashed, left, or were cut off (their messages may be lost).
    failed: BTreeSet<u32>,
    /// Nodes that crashed.
    dead: BTreeSet<u32>,
    /// How members that stopped ended their last view, for reports.
    stops: Vec<(u32, u64, String)>,
    /// The current view's groups, for the stability check in the delivery upcalls.
    registry: Arc<Mutex<Vec<Arc<MulticastGroup>>>>,
    /// The first stability violation seen.
    unstable: Arc<Mutex<Option<String>>>,
    next_joiner: u32,
    /// The liveness phase has begun: no more faults, set-up faults included.
    calm: bool,
}

impl Sim {
    fn new(seed: u64, shape: Shape, rng: SimRng) -> Self {
        let net = SimNet::new(SimConfig::new(seed));
        let ids: Vec<u32> = (0..shape.members as u32).collect();
        let logs = crate::cluster::first_view_logs(&ids);
        let all = ids
            .iter()
            .zip(logs)
            .map(|(&id, log)| Member::new(id, net.add_node(id), log))
            .collect();
        let layout = layout(&shape);
        // The shape never needs more members than the first view has.
        let current = View {
            vid: 0,
            members: ids.iter().map(|&id| joiner_info(id)).collect(),
            subgroups: layout(&ids, None).unwrap_or_default(),
            ..View::default()
        };
        Self {
            seed,
            view: (0..shape.members).collect(),
            current,
            layout,
            shape,
            rng,
            net,
            all,
            vid: 0,
            faults: Vec::new(),
            stayed: BTreeSet::new(),
            failed: BTreeSet::new(),
            dead: BTreeSet::new(),
            stops: Vec::new(),
            registry: Arc::new(Mutex::new(Vec::new())),
            unstable: Arc::new(Mutex::new(None)),
            next_joiner: FIRST_JOINER,
            calm: false,
        }
    }

    fn run(&mut self) -> Result<(), String> {
        if self.shape.skewed_links {
            self.skew_links();
        }
        self.build_view()?;
        let mut changes = 0;
        while self.view.len() >= 2 {
            // A view set up without some of its members ends by itself.
            let fault = if self.view_starts_short() {
                None
            } else if changes < self.shape.changes {
                changes += 1;
                let f = self.draw_fault();
                self.faults.push(f.clone());
                Some(f)
            } else {
                break;
            };
            if !self.end_view(fault.as_ref())? {
                break;
            }
        }
        // Liveness needs an adequate view: nodes join until there is one (each attempt is a
        // view change; a set-up fault may spoil one, so a few are allowed).
        // A view set up without some of its members ends by itself first.
        self.calm = true;
        let mut attempts = 0;
        while !self.view.is_empty()
            && (!self.adequate() || self.view_starts_short())
            && attempts < 8
        {
            attempts += 1;
            let k = self.shape.need - self.view.len().min(self.shape.need);
            let fault = if k == 0 || self.view_starts_short() {
                None
            } else {
                let f = Fault::Join((0..k).map(|_| self.joiner_id()).collect());
                self.faults.push(f.clone());
                Some(f)
            };
            if !self.end_view(fault.as_ref())? {
                break;
            }
        }
        if !self.view.is_empty() && !self.adequate() {
            return Err(format!(
                "view {}: still inadequate ({} members, {} needed) after {attempts} rounds of joins",
                self.vid,
                self.view.len(),
                self.shape.need
            ));
        }
        self.drain()?;
        self.stayed = self.view.iter().map(|&i| self.all[i].id).collect();
        Ok(())
    }

    /// Draws one-way delays: most links keep the default, some get up to several times the
    /// failure-detection delay.
    fn skew_links(&mut self) {
        let ids: Vec<u32> = self.all.iter().map(|m| m.id).collect();
        for &a in &ids {
            for &b in &ids {
                if a != b && self.rng.below(3) == 0 {
                    let us = [20, 100, 500, 2_000, 5_000][self.rng.below(5) as usize];
                    self.net.set_delay(a, b, Duration::from_micros(us));
                }
            }
        }
    }

    fn draw_fault(&mut self) -> Fault {
        let n = self.view.len();
        let other = |rng: &mut SimRng| 1 + rng.below(n as u64 - 1) as usize;
        match self.rng.below(9) {
            8 => {
                let a = self.rng.below(n as u64) as usize;
                let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
                Fault::FalseSuspicion(a, b)
            }
            0 => Fault::Crash(vec![0]),
            1 | 2 => Fault::Crash(vec![other(&mut self.rng)]),
            3 if n >= 3 => {
                let a = self.rng.below(n as u64) as usize;
                let b = (a + 1 + self.rng.below(n as u64 - 1) as usize) % n;
                Fault::Crash(vec![a, b])
            }
            4 => Fault::Isolate(self.rng.below(n as u64) as usize),
            5 => Fault::Leave(self.rng.below(n as u64) as usize),
            6 if n >= 3 => Fault::JoinThenLeaderCrash(self.joiner_id()),
            _ => {
                let k = 1 + self.rng.below(2) as usize;
                Fault::Join((0..k).map(|_| self.joiner_id()).collect())
            }
        }
    }

    /// Whether the current view was set up with members missing (crashed, or cut off).
    fn view_starts_short(&self) -> bool {
        self.view.iter().any(|&i| {
            self.all[i]
                .group
                .as_ref()
                .is_none_or(|g| !g.sst().frozen_ranks().is_empty())
        })
    }

    /// Whether the current view provisions the shard.
    fn adequate(&self) -> bool {
        self.current.is_adequate()
    }

    /// Whether node `id` sends in the current view.
    fn sends(&self, id: u32) -> bool {
        self.current
            .subgroups
            .iter()
            .flat_map(|s| &s.shards)
            .any(|shard| shard.senders.contains(&id))
    }

    fn joiner_id(&mut self) -> u32 {
        self.next_joiner += 1;
        self.next_joiner - 1
    }

    /// Builds the multicast of view `self.vid` on every member of `self.view`, phase by phase
    /// (nobody may block under simulation), with its change protocol, and has each member send
    /// what it owes first.
    fn build_view(&mut self) -> Result<(), String> {
        lock(&self.registry).clear();
        let mut prepared = Vec::new();
        let running: Vec<usize> = self
            .view
            .iter()
            .copied()
            .filter(|&i| !self.dead.contains(&self.all[i].id))
            .collect();
        for (rank, &i) in self.view.iter().enumerate() {
            let m = &self.all[i];
            if self.dead.contains(&m.id) {
                continue;
            }
            let spec = self
                .current
                .multicast_spec(m.id)
                .ok_or_else(|| format!("view {}: node {} is not in it", self.vid, m.id))?;
            debug_assert_eq!(spec.my_rank, rank);
            let log = Arc::clone(&m.log);
            let (registry, unstable, vid) = (
                Arc::clone(&self.registry),
                Arc::clone(&self.unstable),
                self.vid,
            );
            let p = MulticastGroup::prepare(
                Arc::clone(&m.fabric) as Arc<dyn Fabric>,
                spec,
                MulticastConfig::default(),
                Box::new(move |d| {
                    lock(&log).events.push(Event::delivered(&d));
                    // Stability, from the outside: every member of the view has really
                    // received what is delivered (its own published count), not only in
                    // the deliverer's copy of the table. Trim deliveries (no stable prefix)
                    // cover only the members that stay, which virtual synchrony checks.
                    if d.stable < 0 {
                        return;
                    }
                    for g in lock(&registry).iter() {
                        let got = g.received_from(d.subgroup, d.sender);
                        if got.is_some_and(|c| c <= d.index) {
                            lock(&unstable).get_or_insert_with(|| {
                                format!(
                                    "view {vid}: a member delivered message {} of node {} while node {} had received only {:?} of that sender's messages (stability)",
                                    d.index, d.sender, g.spec().my_id(), got
                                )
                            });
                        }
                    }
                }),
            )
            .map_err(|e| format!("view {}: preparing node {}: {e}", self.vid, m.id))?;
            prepared.push(p);
        }
        let mut connecting = Vec::new();
        for (p, &i) in prepared.into_iter().zip(&running) {
            let c = p.connect(false).map_err(|e| {
                format!("view {}: connecting node {}: {e}", self.vid, self.all[i].id)
            })?;
            connecting.push(c);
        }
        let bound = Duration::from_secs(5);
        if !self
            .net
            .run_until(bound, &mut || connecting.iter().all(|c| c.ready()))
        {
            // Members cut off from some others: each side freezes who did not arrive, as
            // a member does after its set-up bound.
            for c in &connecting {
                c.give_up_on_missing(bound);
            }
        }
        for (c, &i) in connecting.into_iter().zip(&running) {
            let g = c
                .start(false)
                .map_err(|e| format!("view {}: starting node {}: {e}", self.vid, self.all[i].id))?;
            let m = &mut self.all[i];
            *lock(&m.outcome) = None;
            let o = Arc::clone(&m.outcome);
            g.install_change_protocol(
                true,
                Some(Arc::clone(&m.joins)),
                Box::new(move |out| *lock(&o) = Some(out)),
            )
            .map_err(|e| format!("view {}: change protocol on node {}: {e}", self.vid, m.id))?;
            let g = Arc::new(g);
            lock(&self.registry).push(Arc::clone(&g));
            m.group = Some(g);
        }
        // Trimmed messages go first, before the application sends anything in this view (an
        // inadequate view takes none: they wait for an adequate one).
        let mut owing: Vec<usize> = self
            .view
            .iter()
            .copied()
            .filter(|&i| !self.all[i].owed.is_empty() && self.adequate())
            .collect();
        let mut steps = 0u64;
        while !owing.is_empty() {
            steps += 1;
            if steps > VIEW_END_STEPS {
                return Err(format!(
                    "view {}: trimmed messages were not taken within {VIEW_END_STEPS} steps",
                    self.vid
                ));
            }
            owing.retain(|&i| {
                let m = &mut self.all[i];
                let Some(g) = &m.group else { return false };
                while let Some(r) = m.owed.first() {
                    match g.try_send_flags(r.subgroup, &r.payload, r.flags) {
                        Ok(Some(_)) => {
                            m.owed.remove(0);
                        }
                        Ok(None) => return true,
                        // The view wedged already: the rest waits for the next one.
                        Err(_) => return false,
                    }
                }
                false
            });
            self.poll_all();
            self.net.step();
        }
        Ok(())
    }

    fn poll_all(&self) {
        for &i in &self.view {
            if let Some(g) = &self.all[i].group {
                g.poll();
            }
        }
    }

    /// One random member of the view sends one message, if it may.
    fn send_one(&mut self, silent: &BTreeSet<usize>) -> bool {
        let rank = self.rng.below(self.view.len() as u64) as usize;
        let i = self.view[rank];
        if silent.contains(&rank) || !self.sends(self.all[i].id) {
            return false;
        }
        let big = self.rng.below(5) == 0;
        let len = if big {
            self.shape.sizes.max_smc_payload + 1 + self.rng.below(4096) as usize
        } else {
            MessageId::LEN + self.rng.below(self.shape.sizes.max_smc_payload as u64 - 12) as usize
        };
        let m = &mut self.all[i];
        let Some(g) = &m.group else { return false };
        let id = MessageId {
            sender: m.id,
            serial: m.next_serial,
        };
        let mut payload = vec![(self.seed as u8) ^ (m.id as u8) ^ (id.serial as u8); len];
        id.stamp(&mut payload);
        // Log the send first: a message may be delivered before try_send returns.
        lock(&m.log).events.push(Event::Sent {
            subgroup: 0,
            shard: 0,
            id,
            digest: digest(&payload),
        });
        match g.try_send(0, &payload) {
            Ok(Some(_)) => {
                m.next_serial += 1;
                true
            }
            other => {
                lock(&m.log).events.pop();
                matches!(other, Err(MulticastError::Wedged { .. }))
            }
        }
    }

    /// Runs the view with traffic until `fault` ends it (or, with no fault, until it ends by
    /// itself: it was set up without some members); builds the next view from the outcomes.
    /// Returns false when no view follows.
    fn end_view(&mut self, fault: Option<&Fault>) -> Result<bool, String> {
        let strike = if fault.is_some() {
            500 + self.rng.below(4_000)
        } else {
            1
        };
        // Ranks that send nothing more (crashed, cut off or leaving).
        let mut silent: BTreeSet<usize> = (0..self.view.len())
            .filter(|&r| self.all[self.view[r]].group.is_none())
            .collect();
        let leave_linger = 2_000;
        let victims: Vec<usize> = match fault {
            Some(Fault::Crash(v)) => v.clone(),
            Some(Fault::Isolate(r) | Fault::Leave(r)) => vec![*r],
            Some(Fault::FalseSuspicion(_, b)) => vec![*b],
            Some(Fault::JoinThenLeaderCrash(_)) => vec![0],
            _ => Vec::new(),
        };
        let mut step = 0u64;
        let mut wedged_seen = false;
        let mut taken = false;
        loop {
            step += 1;
            let running = |s: &Sim| -> Vec<usize> {
                s.view
                    .iter()
                    .copied()
                    .filter(|&i| s.all[i].group.is_some() && !s.dead.contains(&s.all[i].id))
                    .collect()
            };
            // A member suspected while alive learns it is out only when the others cut it
            // off after installing the next view (as the view manager does): not waited for.
            let cut_later = match fault {
                Some(Fault::FalseSuspicion(_, b)) => Some(self.view[*b]),
                _ => None,
            };
            let ended = running(self)
                .iter()
                .filter(|&&i| Some(i) != cut_later)
                .all(|&i| lock(&self.all[i].outcome).is_some());
            if ended && step > strike {
                break;
            }
            if step > strike + VIEW_END_STEPS {
                let waiting: Vec<u32> = running(self)
                    .iter()
                    .filter(|&&i| lock(&self.all[i].outcome).is_none())
                    .map(|&i| self.all[i].id)
                    .collect();
                return Err(format!(
                    "view {}: members {waiting:?} did not end the view within {VIEW_END_STEPS} steps of the fault",
                    self.vid
                ));
            }
            if step == strike {
                match fault {
                    Some(Fault::Crash(v)) => {
                        self.crash(v[0]);
                        silent.insert(v[0]);
                    }
                    Some(Fault::Isolate(r)) => {
                        let me = self.all[self.view[*r]].id;
                        for &j in &self.view {
                            let p = self.all[j].id;
                            if p != me {
                                self.net.break_link(me, p);
                            }
                        }
                        silent.insert(*r);
                    }
                    Some(Fault::Leave(r)) => {
                        if let Some(g) = &self.all[self.view[*r]].group {
                            g.begin_leave().map_err(|e| format!("leave: {e}"))?;
                        }
                        silent.insert(*r);
                    }
                    Some(Fault::FalseSuspicion(a, b)) => {
                        let suspect = self.all[self.view[*b]].id;
                        if let Some(g) = &self.all[self.view[*a]].group {
                            g.sst()
                                .report_failure(suspect)
                                .map_err(|e| format!("false suspicion: {e}"))?;
                        }
                        silent.insert(*b);
                    }
                    Some(Fault::Join(ids)) => {
                        for &id in ids {
                            self.ask_to_join(id)?;
                        }
                    }
                    Some(Fault::JoinThenLeaderCrash(id)) => self.ask_to_join(*id)?,
                    _ => {}
                }
            }
            if step > strike {
                match fault {
                    Some(Fault::Crash(v)) if v.len() > 1 && wedged_seen => {
                        if let Some(&r) = v.iter().find(|&&r| !silent.contains(&r)) {
                            self.crash(r);
                            silent.insert(r);
                        }
                    }
                    Some(Fault::Leave(r)) if step == strike + leave_linger => self.crash(*r),
                    Some(Fault::JoinThenLeaderCrash(_)) if !taken => {
                        taken = self
                            .view
                            .iter()
                            .skip(1)
                            .any(|&i| self.all[i].group.as_ref().is_some_and(|g| g.wedged()));
                        if taken {
                            self.crash(0);
                            silent.insert(0);
                        }
                    }
                    _ => {}
                }
            }
            wedged_seen |= self.send_one(&silent);
            for &i in &self.view {
                if self.dead.contains(&self.all[i].id) {
                    continue;
                }
                if let Some(g) = &self.all[i].group {
                    g.poll();
                }
            }
            self.net.step();
        }
        for &r in &victims {
            self.failed.insert(self.all[self.view[r]].id);
        }
        self.next_view()
    }

    /// Node `id` asks the highest-ranked member to join, follows its redirect to the leader,
    /// and is queued there: the GMS port's own admission rules decide each step.
    fn ask_to_join(&mut self, id: u32) -> Result<(), String> {
        let joiner = joiner_info(id);
        let mut asked = self.view.len() - 1;
        for _ in 0..2 {
            let me = self.all[self.view[asked]].id;
            let queue = Arc::clone(&self.all[self.view[asked]].joins);
            let decision = admit(
                &self.current,
                me,
                PROTOCOL_VERSION,
                &joiner,
                &lock(&queue),
                derecho::gms::MAX_PENDING_JOINS,
            );
            match decision {
                Admission::Queue => {
                    lock(&queue).push(joiner);
                    return Ok(());
                }
                Admission::Redirect { leader, .. } => {
                    asked = self
                        .current
                        .rank_of(leader.id)
                        .ok_or("redirected to a node outside the view")?;
                }
                other => return Err(format!("node {id} was not admitted: {other:?}")),
            }
        }
        Err(format!("node {id}: redirected twice"))
    }

    fn crash(&mut self, rank: usize) {
        let id = self.all[self.view[rank]].id;
        self.net.crash(id);
        self.dead.insert(id);
        self.failed.insert(id);
    }

    /// Turns the outcomes into the next view: each member decides with the view manager's own
    /// rules, and every member that goes on must have computed the same next view (one
    /// membership, and one layout, per view id). Sometimes a member of the next view crashes,
    /// or the network splits its members, before it is set up.
    fn next_view(&mut self) -> Result<bool, String> {
        let mut next: Option<(u32, View)> = None;
        for &i in &self.view.clone() {
            let m = &mut self.all[i];
            let Some(g) = m.group.take() else { continue };
            g.stop();
            if self.dead.contains(&m.id) {
                continue;
            }
            let outcome = lock(&m.outcome).take();
            let step = outcome
                .as_ref()
                .map(|o| after(&self.current, m.id, o, &self.layout));
            match (step, outcome) {
                (Some(Step::Next { view, .. }), Some(Outcome::Trimmed { resend, .. })) => {
                    if let Some((who, theirs)) = &next {
                        if *theirs != view {
                            return Err(format!(
                                "view {}: node {} installs {:?} ({}), node {who} installs {:?} ({})",
                                self.vid + 1,
                                m.id,
                                view.ids(),
                                view.inadequate.as_deref().unwrap_or("adequate"),
                                theirs.ids(),
                                theirs.inadequate.as_deref().unwrap_or("adequate"),
                            ));
                        }
                    } else {
                        next = Some((m.id, view));
                    }
                    m.owed = owed_after_trim(resend, std::mem::take(&mut m.owed));
                }
                (step, outcome) => {
                    self.failed.insert(m.id);
                    let why = match step {
                        Some(Step::Stop(why)) => why.to_string(),
                        _ => format!("{outcome:?}"),
                    };
                    self.stops.push((m.id, self.vid, why));
                }
            }
        }
        let Some((_, view)) = next else {
            self.view.clear();
            return Ok(false);
        };
        let members = view.ids();
        let joined = view.joined.clone();
        // The others cut off members they removed that still run (suspected while alive), as
        // the view manager does, so that these learn they are out and stop.
        for &i in &self.view {
            let id = self.all[i].id;
            if !members.contains(&id) && !self.dead.contains(&id) {
                for &other in &members {
                    self.net.break_link(other, id);
                }
                self.failed.insert(id);
            }
        }
        // A member that stopped (removed, or in a minority) shuts its fabric down, as a
        // stopping process does; if the others' next view still holds it (its removal came
        // after the view's changes were fixed), that view starts with its row frozen.
        let stopped: Vec<u32> = self
            .failed
            .iter()
            .copied()
            .filter(|id| !self.dead.contains(id) && self.all.iter().any(|m| m.id == *id))
            .collect();
        for id in stopped {
            self.net.crash(id);
            self.dead.insert(id);
        }
        // Each GMS queue drops the nodes the new view holds, as the GMS service does.
        for m in &self.all {
            lock(&m.joins).retain(|j| !members.contains(&j.id));
        }
        // Joiners get a node and a log that starts with the view they join.
        for &id in &joined {
            let log = Arc::new(Mutex::new(MemberLog::new(id)));
            self.all.push(Member::new(id, self.net.add_node(id), log));
        }
        self.vid += 1;
        assert_eq!(view.vid, self.vid, "views follow one another by one");
        self.current = view;
        self.view = members
            .iter()
            .filter_map(|id| self.all.iter().position(|m| m.id == *id))
            .collect();
        // Set-up faults: one in five decided views loses a member or splits before it starts.
        let live: Vec<u32> = members
            .iter()
            .copied()
            .filter(|id| !self.dead.contains(id))
            .collect();
        if live.len() >= 2 && !self.calm && self.rng.below(5) == 0 {
            let fault = if self.rng.below(2) == 0 {
                let id = live[self.rng.below(live.len() as u64) as usize];
                self.net.crash(id);
                self.dead.insert(id);
                self.failed.insert(id);
                Fault::CrashBeforeSetup(id)
            } else {
                let k = 1 + self.rng.below(live.len() as u64 - 1) as usize;
                let (a, b) = (live[..k].to_vec(), live[k..].to_vec());
                for &x in &a {
                    for &y in &b {
                        self.net.cut(x, y);
                    }
                }
                // Whichever side stops, its members' messages may be lost.
                Fault::PartitionBeforeSetup(a, b)
            };
            self.faults.push(fault);
        }
        for &i in &self.view {
            if !self.dead.contains(&self.all[i].id) {
                lock(&self.all[i].log).events.push(Event::View {
                    vid: self.vid,
                    members: members.clone(),
                });
            }
        }
        self.build_view()?;
        Ok(true)
    }

    /// The liveness phase: no more faults or sends; everything sent by a member still in the
    /// group must be delivered by every member still in the group.
    fn drain(&mut self) -> Result<(), String> {
        if self.view.is_empty() {
            return Ok(());
        }
        let wanted = |s: &Sim| -> bool { s.first_missing().is_none() };
        let mut steps = 0u64;
        while !wanted(self) {
            for _ in 0..512 {
                self.poll_all();
                self.net.step();
            }
            steps += 512;
            if steps > DRAIN_STEPS {
                let missing = self.first_missing().unwrap_or_default();
                return Err(format!(
                    "view {}: messages of members still in the group were not delivered within {DRAIN_STEPS} steps after the faults stopped ({missing})",
                    self.vid
                ));
            }
        }
        for &i in &self.view {
            if let Some(g) = self.all[i].group.take() {
                g.stop();
            }
        }
        Ok(())
    }
}

impl Sim {
    /// The first message that a member of the view still owes a delivery of: one sent by a
    /// member of the view and not delivered by this member, unless the member joined after
    /// the view in which the others delivered it.
    fn first_missing(&self) -> Option<String> {
        let logs: Vec<MemberLog> = self
            .view
            .iter()
            .map(|&i| lock(&self.all[i].log).clone())
            .collect();
        let first = first_delivery_views(&logs);
        for log in &logs {
            let joined = log.events.iter().find_map(|e| match e {
                Event::View { vid, .. } => Some(*vid),
                _ => None,
            });
            let got: BTreeSet<MessageId> = log
                .events
                .iter()
                .filter_map(|e| match e {
                    Event::Delivered { id, .. } => Some(*id),
                    _ => None,
                })
                .collect();
            for sender in &logs {
                let lacking = sender.events.iter().find_map(|e| match e {
                    Event::Sent { id, .. }
                        if !got.contains(id)
                            && first
                                .get(&(0, *id))
                                .is_none_or(|&v| joined.is_some_and(|j| v >= j)) =>
                    {
                        Some(*id)
                    }
                    _ => None,
                });
                if let Some(id) = lacking {
                    let owes = self
                        .all
                        .iter()
                        .find(|m| m.id == sender.node)
                        .map_or(0, |m| m.owed.len());
                    return Some(format!(
                        "node {} lacks {id:?}; its sender owes {owes} messages",
                        log.node
                    ));
                }
            }
        }
        None
    }
}

/// The layout of a shape: one ordered shard of every member, adequate with at least
/// [`Shape::need`] members. The first `senders` nodes and every joiner send, and so does any
/// member that sent in the previous view; if none would, the first member does.
fn layout(shape: &Shape) -> LayoutFn {
    let (need, natural, sizes) = (shape.need, shape.senders as u32, shape.sizes.clone());
    Arc::new(move |ids: &[u32], previous: Option<&View>| {
        if ids.len() < need {
            return Err(LayoutError::Inadequate {
                subgroup: SubgroupId(0),
                shard: 0,
                have: ids.len(),
                need,
            });
        }
        let sent_before = |id: u32| {
            previous
                .and_then(|v| v.subgroups.first())
                .and_then(|s| s.shards.first())
                .is_some_and(|shard| shard.senders.contains(&id))
        };
        let mut senders: Vec<u32> = ids
            .iter()
            .copied()
            .filter(|&id| id < natural || id >= FIRST_JOINER || sent_before(id))
            .collect();
        if senders.is_empty() {
            senders = ids.iter().copied().take(1).collect();
        }
        Ok(vec![SubgroupSpec {
            shards: vec![ShardSpec {
                members: ids.to_vec(),
                senders,
                mode: Mode::Ordered,
                sizes: sizes.clone(),
            }],
        }])
    })
}

/// The address record of a simulated joiner (the sim fabric ignores addresses).
pub fn joiner_info(id: u32) -> MemberInfo {
    MemberInfo {
        id,
        ip: [127, 0, 0, 1].into(),
        gms_port: 1,
        fabric_port: 2,
        state_transfer_port: 3,
        external_port: 4,
    }
}

/// Parses a `--seed`/`--seeds` argument list into the seeds to run.
pub fn seeds(first: u64, count: u64) -> impl Iterator<Item = u64> {
    (0..count).map(move |k| first.wrapping_add(k))
}

/// Summary line of a batch of seeds.
pub fn summary(results: &[SeedResult]) -> String {
    let failed = results.iter().filter(|r| r.failure.is_some()).count();
    format!(
        "simulated {} seeds: {} ok, {} failed",
        results.len(),
        results.len() - failed,
        failed
    )
}
