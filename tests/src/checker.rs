//! Checks a run's records against the correctness properties of DESIGN.md §5.
//!
//! Each member of a test group records what it did, in order: the views it installed, the
//! messages it sent and the messages it delivered ([`Event`]). Test payloads carry a
//! [`MessageId`] (sender and serial number) in their first bytes, and every record carries a
//! digest of the whole payload, so the checker can recognise a message on every member. It
//! checks:
//!
//! * **views** — every member installs the same sequence of views (over the views they share),
//!   and view ids go up by one;
//! * **total order** — within one view and subgroup, any two members' delivery sequences are
//!   prefixes of one another;
//! * **counters** — within a view, a member's delivery sequence numbers only go up and its
//!   attested stable prefix never goes back;
//! * **virtual synchrony** — two members that both install view v+1 delivered the same messages
//!   in view v, in the same order;
//! * **integrity** — a delivered message was sent, with exactly these bytes, and no member
//!   delivers it twice;
//! * **stability** — at each delivery the member attests the shard-wide received prefix it saw,
//!   which must cover the message; and, when [`Checker::expect_complete`] is set (runs without
//!   failures), every sent message is delivered by every member of its subgroup;
//! * **per-sender FIFO** — with [`Checker::expect_sender_fifo`], every member delivers each
//!   sender's messages in the order they were sent, across views (a message the ragged trim
//!   left undelivered is sent again before anything newer);
//! * **completeness after faults** — with [`Checker::complete_for`], every message sent by a
//!   member that did not fail is delivered by every member that stayed in the group;
//! * **liveness** — with [`Checker::resume_within`] and logs that carry clock readings
//!   ([`Event::Clock`]), deliveries resume within the bound after each view change: from the
//!   last delivery before the change to the first one in the new view (detection included).
//!
//! Records are written as JSON lines so that separate processes can write them and one checker
//! can read them all.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{BufRead, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

/// A node id, as in the group.
pub type NodeId = u32;

/// Identifies a test message: who sent it and its serial number at that sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    /// The sending node.
    pub sender: NodeId,
    /// The sender's serial number for this message (unique per sender and subgroup).
    pub serial: u64,
}

impl MessageId {
    /// Bytes a test puts at the start of its payload.
    pub const LEN: usize = 12;

    /// Writes the id into the first [`MessageId::LEN`] bytes of a payload.
    pub fn stamp(&self, payload: &mut [u8]) -> bool {
        if payload.len() < Self::LEN {
            return false;
        }
        payload[..4].copy_from_slice(&self.sender.to_le_bytes());
        payload[4..12].copy_from_slice(&self.serial.to_le_bytes());
        true
    }

    /// Reads the id back from a payload, if it is long enough.
    pub fn read(payload: &[u8]) -> Option<Self> {
        let sender = u32::from_le_bytes(payload.get(..4)?.try_into().ok()?);
        let serial = u64::from_le_bytes(payload.get(4..12)?.try_into().ok()?);
        Some(Self { sender, serial })
    }
}

/// A 64-bit FNV-1a digest of a payload (enough to catch corruption in tests).
pub fn digest(payload: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in payload {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h ^ payload.len() as u64
}

/// One thing a member did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// Installed a view.
    View {
        /// Its id.
        vid: u64,
        /// Its members in rank order.
        members: Vec<NodeId>,
    },
    /// Sent a message.
    Sent {
        /// Flat subgroup id.
        subgroup: u32,
        /// The sender's shard in that subgroup.
        #[serde(default)]
        shard: u32,
        /// The message.
        id: MessageId,
        /// Digest of the payload.
        digest: u64,
    },
    /// Delivered a message.
    Delivered {
        /// Flat subgroup id.
        subgroup: u32,
        /// The shard it was delivered in.
        #[serde(default)]
        shard: u32,
        /// The message.
        id: MessageId,
        /// Digest of the payload as delivered.
        digest: u64,
        /// The message's global sequence number in its view.
        seq: i64,
        /// The shard-wide complete prefix the member saw when it delivered (stability
        /// attestation); −1 when the mode has no such notion (unordered).
        stable: i64,
    },
    /// A wall-clock reading (µs since the Unix epoch; members on one host share the clock),
    /// taken right after the event before it. For [`Checker::resume_within`], writers record
    /// one after the first delivery of each view and then after deliveries about every
    /// millisecond.
    Clock {
        /// Microseconds since the Unix epoch.
        unix_us: u64,
    },
}

impl Event {
    /// The record of a delivery. A payload too short to carry a [`MessageId`] is recorded as
    /// sent by node `u32::MAX`, which sent nothing, so the checker reports it.
    pub fn delivered(d: &derecho::multicast::Delivery<'_>) -> Self {
        let id = MessageId::read(d.payload).unwrap_or(MessageId {
            sender: u32::MAX,
            serial: 0,
        });
        Event::Delivered {
            subgroup: d.subgroup as u32,
            shard: d.shard as u32,
            id,
            digest: digest(d.payload),
            seq: d.seq,
            stable: d.stable,
        }
    }
}

/// The records of one member.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberLog {
    /// The member.
    pub node: NodeId,
    /// What it did, in order.
    pub events: Vec<Event>,
}

impl MemberLog {
    /// An empty log for `node`.
    pub fn new(node: NodeId) -> Self {
        Self {
            node,
            events: Vec::new(),
        }
    }

    /// Writes the log as JSON lines (the first line names the node).
    pub fn write_jsonl(&self, mut out: impl Write) -> std::io::Result<()> {
        writeln!(out, "{}", self.node)?;
        for e in &self.events {
            let line = serde_json::to_string(e).map_err(std::io::Error::other)?;
            writeln!(out, "{line}")?;
        }
        Ok(())
    }

    /// Reads a log written by [`MemberLog::write_jsonl`]. A truncated last line (a process
    /// killed while writing) is ignored.
    pub fn read_jsonl(input: impl BufRead) -> std::io::Result<Self> {
        let mut lines = input.lines();
        let node = match lines.next() {
            Some(l) => l?.trim().parse().map_err(std::io::Error::other)?,
            None => return Err(std::io::Error::other("empty log")),
        };
        let mut events = Vec::new();
        for line in lines {
            let line = line?;
            match serde_json::from_str(&line) {
                Ok(e) => events.push(e),
                Err(_) => break,
            }
        }
        Ok(Self { node, events })
    }

    /// Reads a log file.
    pub fn read_file(path: &Path) -> std::io::Result<Self> {
        Self::read_jsonl(std::io::BufReader::new(std::fs::File::open(path)?))
    }
}

/// The checker's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// Views seen (the longest sequence any member installed).
    pub views: usize,
    /// Deliveries checked, over all members.
    pub delivered: usize,
    /// The first violation found, if any.
    pub violation: Option<String>,
}

impl Report {
    /// Whether every property held.
    pub fn ok(&self) -> bool {
        self.violation.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "check={} views={} delivered={} reason={}",
            if self.ok() { "ok" } else { "FAIL" },
            self.views,
            self.delivered,
            self.violation.as_deref().unwrap_or("-")
        )
    }
}

/// Which checks to run on a set of member logs.
#[derive(Clone, Debug, Default)]
pub struct Checker {
    complete: bool,
    sender_fifo: bool,
    complete_for: Option<(BTreeSet<NodeId>, BTreeSet<NodeId>)>,
    fifo: BTreeSet<u32>,
    resume_within: Option<std::time::Duration>,
}

type Delivery = (MessageId, u64);
/// Per (view, subgroup, shard): each member's delivery sequence.
type Sequences = BTreeMap<(u64, u32, u32), Vec<(NodeId, Vec<Delivery>)>>;

impl Checker {
    /// All checks except completeness.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also require that every sent message is delivered by every member that installed the
    /// view it was sent in and stayed to the end (for runs without failures).
    pub fn expect_complete(mut self) -> Self {
        self.complete = true;
        self
    }

    /// Also require that every member delivers each sender's messages (per subgroup) in the
    /// order of their serial numbers, across views: the sender numbers them as it sends.
    pub fn expect_sender_fifo(mut self) -> Self {
        self.sender_fifo = true;
        self
    }

    /// Also require, after faults, that every message sent by a node not in `failed` is
    /// delivered by every node in `stayed` (the members of the last view), except by a node
    /// that joined after the view in which the message was delivered (it has the message's
    /// effect through state transfer).
    pub fn complete_for(mut self, stayed: BTreeSet<NodeId>, failed: BTreeSet<NodeId>) -> Self {
        self.complete_for = Some((stayed, failed));
        self
    }

    /// Also require that, on every member whose log carries clock readings, deliveries resume
    /// within `bound` after each view change: from the last delivery before the change to the
    /// first one in the new view (detection of a failure included). Views after which the
    /// member delivered nothing (the end of a run) are not judged.
    pub fn resume_within(mut self, bound: std::time::Duration) -> Self {
        self.resume_within = Some(bound);
        self
    }

    /// Raw (unordered) subgroups promise only per-sender FIFO order: for these, compare each
    /// sender's messages separately instead of the whole delivery sequence.
    pub fn fifo_subgroups(mut self, subgroups: impl IntoIterator<Item = u32>) -> Self {
        self.fifo.extend(subgroups);
        self
    }

    /// Checks the logs; stops at the first violation.
    pub fn check(&self, logs: &[MemberLog]) -> Report {
        let mut report = Report {
            views: 0,
            delivered: 0,
            violation: None,
        };
        if let Err(v) = self.run(logs, &mut report) {
            report.violation = Some(v);
        }
        report
    }

    fn run(&self, logs: &[MemberLog], report: &mut Report) -> Result<(), String> {
        // Views: each member's sequence, and agreement on shared vids.
        let mut view_members: BTreeMap<u64, (NodeId, Vec<NodeId>)> = BTreeMap::new();
        for log in logs {
            let mut last: Option<u64> = None;
            let mut n = 0;
            for e in &log.events {
                if let Event::View { vid, members } = e {
                    if let Some(prev) = last {
                        if *vid != prev + 1 {
                            return Err(format!(
                                "node {} installed view {vid} after view {prev}",
                                log.node
                            ));
                        }
                    }
                    last = Some(*vid);
                    n += 1;
                    match view_members.get(vid) {
                        Some((who, m)) if m != members => {
                            return Err(format!(
                                "view {vid}: node {} has members {members:?}, node {who} has {m:?}",
                                log.node
                            ))
                        }
                        Some(_) => {}
                        None => {
                            view_members.insert(*vid, (log.node, members.clone()));
                        }
                    }
                }
            }
            report.views = report.views.max(n);
        }
        // Sent messages.
        let mut sent: HashMap<(u32, MessageId), u64> = HashMap::new();
        let mut sent_in: Vec<(u32, u32, MessageId)> = Vec::new();
        for log in logs {
            for e in &log.events {
                match e {
                    Event::View { .. } | Event::Clock { .. } => {}
                    Event::Sent {
                        subgroup,
                        shard,
                        id,
                        digest,
                    } => {
                        if id.sender != log.node {
                            return Err(format!(
                                "node {} logged a send stamped by node {}",
                                log.node, id.sender
                            ));
                        }
                        if sent.insert((*subgroup, *id), *digest).is_some() {
                            return Err(format!(
                                "node {} sent {id:?} twice in subgroup {subgroup}",
                                log.node
                            ));
                        }
                        sent_in.push((*subgroup, *shard, *id));
                    }
                    Event::Delivered { .. } => {}
                }
            }
        }
        // Deliveries per (member, vid, subgroup), with integrity and stability attestations.
        let mut seqs: Sequences = BTreeMap::new();
        let mut installed: HashMap<NodeId, BTreeSet<u64>> = HashMap::new();
        for log in logs {
            let mut vid: Option<u64> = None;
            let mut seen: BTreeSet<(u32, MessageId)> = BTreeSet::new();
            let mut current: BTreeMap<(u32, u32), Vec<Delivery>> = BTreeMap::new();
            // Per (subgroup, shard) in the current view: the last delivered seq and the last
            // attested stable prefix; neither may go backwards.
            let mut counters: BTreeMap<(u32, u32), (i64, i64)> = BTreeMap::new();
            let flush = |vid: Option<u64>,
                         current: &mut BTreeMap<(u32, u32), Vec<Delivery>>,
                         seqs: &mut Sequences| {
                if let Some(v) = vid {
                    for ((sg, shard), list) in std::mem::take(current) {
                        seqs.entry((v, sg, shard))
                            .or_default()
                            .push((log.node, list));
                    }
                }
            };
            for e in &log.events {
                match e {
                    Event::View { vid: v, .. } => {
                        flush(vid, &mut current, &mut seqs);
                        counters.clear();
                        vid = Some(*v);
                        installed.entry(log.node).or_default().insert(*v);
                    }
                    Event::Sent { .. } | Event::Clock { .. } => {}
                    Event::Delivered {
                        subgroup,
                        shard,
                        id,
                        digest,
                        seq,
                        stable,
                    } => {
                        report.delivered += 1;
                        let Some(sent_digest) = sent.get(&(*subgroup, *id)) else {
                            return Err(format!("node {} delivered {id:?} in subgroup {subgroup}, which nobody sent", log.node));
                        };
                        if sent_digest != digest {
                            return Err(format!(
                                "node {} delivered {id:?} with other bytes than were sent",
                                log.node
                            ));
                        }
                        if !seen.insert((*subgroup, *id)) {
                            return Err(format!("node {} delivered {id:?} twice", log.node));
                        }
                        if *stable >= 0 && *stable < *seq {
                            return Err(format!(
                                "node {} delivered seq {seq} of subgroup {subgroup} while the shard had only seq {stable} everywhere",
                                log.node
                            ));
                        }
                        if vid.is_none() {
                            return Err(format!(
                                "node {} delivered before installing a view",
                                log.node
                            ));
                        }
                        if !self.fifo.contains(subgroup) {
                            let last = counters.entry((*subgroup, *shard)).or_insert((-1, -1));
                            if *seq <= last.0 {
                                return Err(format!(
                                    "node {}: delivery seq of subgroup {subgroup} went from {} to {seq}",
                                    log.node, last.0
                                ));
                            }
                            if *stable >= 0 && *stable < last.1 {
                                return Err(format!(
                                    "node {}: stable prefix of subgroup {subgroup} went back from {} to {stable}",
                                    log.node, last.1
                                ));
                            }
                            *last = (*seq, (*stable).max(last.1));
                        }
                        current
                            .entry((*subgroup, *shard))
                            .or_default()
                            .push((*id, *digest));
                    }
                }
            }
            flush(vid, &mut current, &mut seqs);
        }
        // Total order within a view, and virtual synchrony across the view change.
        for ((vid, sg, _shard), members) in &seqs {
            // In FIFO subgroups each sender's messages form their own sequence; otherwise the
            // whole delivery sequence is compared.
            let groups: Vec<Vec<(NodeId, Vec<Delivery>)>> = if self.fifo.contains(sg) {
                let senders: BTreeSet<NodeId> = members
                    .iter()
                    .flat_map(|(_, l)| l.iter().map(|d| d.0.sender))
                    .collect();
                senders
                    .iter()
                    .map(|s| {
                        members
                            .iter()
                            .map(|(n, l)| {
                                (*n, l.iter().filter(|d| d.0.sender == *s).copied().collect())
                            })
                            .collect()
                    })
                    .collect()
            } else {
                vec![members.clone()]
            };
            for members in &groups {
                for (i, (a, sa)) in members.iter().enumerate() {
                    for (b, sb) in members.iter().skip(i + 1) {
                        let n = sa.len().min(sb.len());
                        if let Some(k) = (0..n).find(|&k| sa[k] != sb[k]) {
                            return Err(format!(
                            "view {vid} subgroup {sg}: nodes {a} and {b} differ at delivery {k} ({:?} vs {:?})",
                            sa[k].0, sb[k].0
                        ));
                        }
                        if self.fifo.contains(sg) {
                            continue;
                        }
                        let both_next = installed.get(a).is_some_and(|s| s.contains(&(vid + 1)))
                            && installed.get(b).is_some_and(|s| s.contains(&(vid + 1)));
                        if both_next && sa.len() != sb.len() {
                            return Err(format!(
                            "view {vid} subgroup {sg}: nodes {a} and {b} both installed view {} but delivered {} and {} messages in view {vid}",
                            vid + 1,
                            sa.len(),
                            sb.len()
                        ));
                        }
                    }
                }
            }
        }
        if self.complete {
            let delivered_by: HashMap<NodeId, BTreeSet<(u32, MessageId)>> = logs
                .iter()
                .map(|l| {
                    let set = l
                        .events
                        .iter()
                        .filter_map(|e| match e {
                            Event::Delivered { subgroup, id, .. } => Some((*subgroup, *id)),
                            _ => None,
                        })
                        .collect();
                    (l.node, set)
                })
                .collect();
            let shard_members: HashMap<(u32, u32), BTreeSet<NodeId>> =
                seqs.iter()
                    .fold(HashMap::new(), |mut m, ((_, sg, shard), ms)| {
                        m.entry((*sg, *shard))
                            .or_default()
                            .extend(ms.iter().map(|(n, _)| *n));
                        m
                    });
            for (sg, shard, id) in &sent_in {
                for node in shard_members.get(&(*sg, *shard)).into_iter().flatten() {
                    if !delivered_by
                        .get(node)
                        .is_some_and(|s| s.contains(&(*sg, *id)))
                    {
                        return Err(format!(
                            "node {node} never delivered {id:?} of subgroup {sg}"
                        ));
                    }
                }
            }
        }
        if self.sender_fifo {
            for log in logs {
                let mut last: BTreeMap<(u32, NodeId), u64> = BTreeMap::new();
                for e in &log.events {
                    if let Event::Delivered { subgroup, id, .. } = e {
                        if let Some(prev) = last.insert((*subgroup, id.sender), id.serial) {
                            if id.serial <= prev {
                                return Err(format!(
                                    "node {} delivered message {} of sender {} after message {prev} (per-sender FIFO)",
                                    log.node, id.serial, id.sender
                                ));
                            }
                        }
                    }
                }
            }
        }
        if let Some((stayed, failed)) = &self.complete_for {
            let first_delivered = first_delivery_views(logs);
            for log in logs.iter().filter(|l| stayed.contains(&l.node)) {
                let joined = log.events.iter().find_map(|e| match e {
                    Event::View { vid, .. } => Some(*vid),
                    _ => None,
                });
                let got: BTreeSet<(u32, MessageId)> = log
                    .events
                    .iter()
                    .filter_map(|e| match e {
                        Event::Delivered { subgroup, id, .. } => Some((*subgroup, *id)),
                        _ => None,
                    })
                    .collect();
                // Messages delivered before this member joined reached it as state, not as
                // deliveries.
                let owed = |sg: u32, id: &MessageId| {
                    first_delivered
                        .get(&(sg, *id))
                        .is_none_or(|&v| joined.is_some_and(|j| v >= j))
                };
                if let Some((sg, _, id)) = sent_in.iter().find(|(sg, _, id)| {
                    !failed.contains(&id.sender) && owed(*sg, id) && !got.contains(&(*sg, *id))
                }) {
                    return Err(format!(
                        "node {} stayed in the group but never delivered {id:?} of subgroup {sg}, whose sender did not fail (completeness)",
                        log.node
                    ));
                }
            }
        }
        if let Some(bound) = self.resume_within {
            for log in logs {
                check_pauses(log, bound)?;
            }
        }
        Ok(())
    }
}

/// For every delivered message, the first view in which any member delivered it.
pub fn first_delivery_views(logs: &[MemberLog]) -> BTreeMap<(u32, MessageId), u64> {
    let mut first: BTreeMap<(u32, MessageId), u64> = BTreeMap::new();
    for log in logs {
        let mut vid = 0;
        for e in &log.events {
            match e {
                Event::View { vid: v, .. } => vid = *v,
                Event::Delivered { subgroup, id, .. } => {
                    let at = first.entry((*subgroup, *id)).or_insert(vid);
                    *at = (*at).min(vid);
                }
                _ => {}
            }
        }
    }
    first
}

/// The liveness check of [`Checker::resume_within`] on one member's log.
fn check_pauses(log: &MemberLog, bound: std::time::Duration) -> Result<(), String> {
    let bound_us = u64::try_from(bound.as_micros()).unwrap_or(u64::MAX);
    // The clock reading after the latest delivery, and whether a delivery awaits its reading.
    let mut last_delivery: Option<u64> = None;
    let mut unclocked = false;
    // A view change under way: the view it led to, and when deliveries stopped.
    let mut pending: Option<(u64, u64)> = None;
    for e in &log.events {
        match e {
            Event::View { vid, .. } => {
                // Views in a row without deliveries between them make one pause.
                pending = match pending {
                    Some((_, stopped)) => Some((*vid, stopped)),
                    None => last_delivery.map(|stopped| (*vid, stopped)),
                };
                unclocked = false;
            }
            Event::Delivered { .. } => unclocked = true,
            Event::Clock { unix_us } => {
                if !unclocked {
                    continue;
                }
                unclocked = false;
                if let Some((vid, stopped)) = pending.take() {
                    let pause = unix_us.saturating_sub(stopped);
                    if pause > bound_us {
                        return Err(format!(
                            "node {}: deliveries paused {:.1} ms around view {vid} (bound {:.1} ms)",
                            log.node,
                            pause as f64 / 1000.0,
                            bound_us as f64 / 1000.0
                        ));
                    }
                }
                last_delivery = Some(*unix_us);
            }
            Event::Sent { .. } => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn id(sender: NodeId, serial: u64) -> MessageId {
        MessageId { sender, serial }
    }

    fn deliver(sg: u32, m: MessageId, seq: i64) -> Event {
        Event::Delivered {
            subgroup: sg,
            shard: 0,
            id: m,
            digest: digest(&m.serial.to_le_bytes()),
            seq,
            stable: seq,
        }
    }

    fn send(sg: u32, m: MessageId) -> Event {
        Event::Sent {
            subgroup: sg,
            shard: 0,
            id: m,
            digest: digest(&m.serial.to_le_bytes()),
        }
    }

    fn view(vid: u64, members: &[NodeId]) -> Event {
        Event::View {
            vid,
            members: members.to_vec(),
        }
    }

    /// Two members, each sends two messages, both deliver all four in the same order.
    fn good() -> Vec<MemberLog> {
        let order = [id(1, 0), id(2, 0), id(1, 1), id(2, 1)];
        (1..=2)
            .map(|node| {
                let mut l = MemberLog::new(node);
                l.events.push(view(0, &[1, 2]));
                l.events.push(send(0, id(node, 0)));
                l.events.push(send(0, id(node, 1)));
                for (k, m) in order.iter().enumerate() {
                    l.events.push(deliver(0, *m, k as i64));
                }
                l
            })
            .collect()
    }

    #[test]
    fn a_correct_run_passes() {
        let r = Checker::new().expect_complete().check(&good());
        assert!(r.ok(), "{r}");
        assert_eq!((r.views, r.delivered), (1, 8));
        assert_eq!(r.to_string(), "check=ok views=1 delivered=8 reason=-");
    }

    #[test]
    fn reordering_is_caught() {
        let mut logs = good();
        logs[1].events.swap(3, 4);
        // Renumber, so that only the order differs (not the counters).
        for (k, e) in logs[1].events.iter_mut().skip(3).enumerate() {
            if let Event::Delivered { seq, stable, .. } = e {
                (*seq, *stable) = (k as i64, k as i64);
            }
        }
        let r = Checker::new().check(&logs);
        assert!(
            r.violation.as_deref().is_some_and(|v| v.contains("differ")),
            "{r}"
        );
    }

    #[test]
    fn a_duplicate_is_caught() {
        let mut logs = good();
        logs[0].events.push(deliver(0, id(1, 0), 9));
        assert!(Checker::new()
            .check(&logs)
            .violation
            .is_some_and(|v| v.contains("twice")));
    }

    #[test]
    fn corrupted_bytes_are_caught() {
        let mut logs = good();
        if let Event::Delivered { digest, .. } = &mut logs[0].events[4] {
            *digest ^= 1;
        }
        assert!(Checker::new()
            .check(&logs)
            .violation
            .is_some_and(|v| v.contains("other bytes")));
    }

    #[test]
    fn an_unsent_message_is_caught() {
        let mut logs = good();
        logs[0].events.push(deliver(0, id(7, 0), 9));
        assert!(Checker::new()
            .check(&logs)
            .violation
            .is_some_and(|v| v.contains("nobody sent")));
    }

    #[test]
    fn delivery_before_stability_is_caught() {
        let mut logs = good();
        if let Event::Delivered { stable, .. } = &mut logs[1].events[5] {
            *stable = 0;
        }
        assert!(Checker::new()
            .check(&logs)
            .violation
            .is_some_and(|v| v.contains("everywhere")));
    }

    #[test]
    fn a_missing_delivery_fails_only_when_completeness_is_expected() {
        let mut logs = good();
        logs[1].events.pop();
        assert!(
            Checker::new().check(&logs).ok(),
            "a prefix is fine without completeness"
        );
        assert!(Checker::new()
            .expect_complete()
            .check(&logs)
            .violation
            .is_some_and(|v| v.contains("never delivered")));
    }

    #[test]
    fn views_must_agree_and_be_consecutive() {
        let mut logs = good();
        logs[1].events.push(view(2, &[2]));
        assert!(Checker::new()
            .check(&logs)
            .violation
            .is_some_and(|v| v.contains("after view 0")));
        let mut logs = good();
        logs[0].events.push(view(1, &[1]));
        logs[1].events.push(view(1, &[2]));
        assert!(Checker::new()
            .check(&logs)
            .violation
            .is_some_and(|v| v.contains("has members")));
    }

    #[test]
    fn virtual_synchrony_requires_equal_sets_before_a_shared_next_view() {
        let mut logs = good();
        // Node 2 misses the last message of view 0, yet both install view 1.
        logs[1].events.pop();
        logs[0].events.push(view(1, &[1, 2]));
        logs[1].events.push(view(1, &[1, 2]));
        assert!(Checker::new()
            .check(&logs)
            .violation
            .is_some_and(|v| v.contains("both installed view 1")));
    }

    #[test]
    fn fifo_subgroups_allow_interleaving_but_not_per_sender_reordering() {
        let mut logs = good();
        // Node 2 interleaves senders differently but keeps each sender's order.
        logs[1].events.swap(4, 5);
        assert!(Checker::new().check(&logs).violation.is_some());
        assert!(Checker::new().fifo_subgroups([0]).check(&logs).ok());
        // Reordering one sender's own messages is caught even in FIFO mode.
        let mut logs = good();
        logs[1].events.swap(3, 5);
        assert!(Checker::new()
            .fifo_subgroups([0])
            .check(&logs)
            .violation
            .is_some());
    }

    /// One member: deliveries in view 0 until `stopped_us`, view 1, a delivery at `resumed_us`.
    fn paused(stopped_us: u64, resumed_us: u64) -> Vec<MemberLog> {
        let mut l = MemberLog::new(1);
        l.events.push(view(0, &[1, 2]));
        l.events.push(send(0, id(1, 0)));
        l.events.push(send(0, id(1, 1)));
        l.events.push(deliver(0, id(1, 0), 0));
        l.events.push(Event::Clock {
            unix_us: stopped_us,
        });
        l.events.push(view(1, &[1]));
        l.events.push(Event::Clock {
            unix_us: stopped_us + 5,
        });
        l.events.push(deliver(0, id(1, 1), 0));
        l.events.push(Event::Clock {
            unix_us: resumed_us,
        });
        vec![l]
    }

    #[test]
    fn counters_that_go_backwards_are_caught() {
        // Node 2 reports its deliveries with seqs 0, 1, 3, 2: the order matches node 1's, but
        // its counter went back.
        let mut logs = good();
        if let Event::Delivered { seq, stable, .. } = &mut logs[1].events[6] {
            *seq = 1;
            *stable = 3;
        }
        let r = Checker::new().check(&logs);
        assert!(
            r.violation
                .as_deref()
                .is_some_and(|v| v.contains("went from")),
            "{r}"
        );
        // A stable prefix attested lower than before is caught too.
        let mut logs = good();
        if let Event::Delivered { stable, .. } = &mut logs[0].events[4] {
            *stable = 3;
        }
        let r = Checker::new().check(&logs);
        assert!(
            r.violation
                .as_deref()
                .is_some_and(|v| v.contains("went back")),
            "{r}"
        );
    }

    #[test]
    fn deliveries_must_resume_within_the_bound_after_a_view_change() {
        let bound = std::time::Duration::from_millis(50);
        let ok = Checker::new()
            .resume_within(bound)
            .check(&paused(1_000_000, 1_040_000));
        assert!(ok.ok(), "{ok}");
        let late = Checker::new()
            .resume_within(bound)
            .check(&paused(1_000_000, 1_060_000));
        assert!(
            late.violation
                .as_deref()
                .is_some_and(|v| v.contains("paused 60.0 ms around view 1")),
            "{late}"
        );
        // Without the option, or without clock readings, no pause is judged.
        assert!(Checker::new().check(&paused(1_000_000, 9_000_000)).ok());
        assert!(Checker::new().resume_within(bound).check(&good()).ok());
    }

    #[test]
    fn logs_round_trip_through_jsonl_and_tolerate_a_torn_tail() {
        let log = &good()[0];
        let mut buf = Vec::new();
        log.write_jsonl(&mut buf).unwrap();
        buf.extend_from_slice(b"{\"Delivered\":{\"subgr");
        let back = MemberLog::read_jsonl(&buf[..]).unwrap();
        assert_eq!(&back, log);
    }

    #[test]
    fn ids_stamp_and_read_back() {
        let mut p = [0u8; 20];
        assert!(id(5, 77).stamp(&mut p));
        assert_eq!(MessageId::read(&p), Some(id(5, 77)));
        assert!(!id(5, 77).stamp(&mut [0u8; 4]));
        assert_eq!(MessageId::read(&[1, 2]), None);
    }

    /// A member that delivers a sender's later message before its earlier one (as when a
    /// trimmed message is sent again after a newer one) breaks per-sender FIFO.
    #[test]
    fn a_resent_message_after_a_newer_one_breaks_sender_fifo() {
        let mut logs = good();
        for l in &mut logs {
            l.events.retain(|e| !matches!(e, Event::Delivered { .. }));
        }
        // Node 1's first message is trimmed in view 0 and goes again in view 1 after its next.
        logs[0].events.push(view(1, &[1, 2]));
        logs[1].events.push(view(1, &[1, 2]));
        for l in &mut logs {
            l.events.push(deliver(0, id(1, 1), 0));
            l.events.push(deliver(0, id(1, 0), 1));
        }
        assert!(Checker::new().check(&logs).ok(), "total order alone holds");
        let r = Checker::new().expect_sender_fifo().check(&logs);
        assert!(
            r.violation.as_deref().is_some_and(|v| v.contains("FIFO")),
            "{r}"
        );
    }

    /// A message whose sender stayed is lost by a member that stayed: completeness fails; the
    /// same loss from a failed sender is allowed.
    #[test]
    fn a_lost_message_of_a_live_sender_breaks_completeness() {
        let mut logs = good();
        logs[1]
            .events
            .retain(|e| !matches!(e, Event::Delivered { id: m, .. } if *m == id(1, 1)));
        logs[0]
            .events
            .retain(|e| !matches!(e, Event::Delivered { id: m, .. } if *m == id(1, 1)));
        let both: BTreeSet<NodeId> = [1, 2].into();
        let r = Checker::new()
            .complete_for(both.clone(), BTreeSet::new())
            .check(&logs);
        assert!(
            r.violation
                .as_deref()
                .is_some_and(|v| v.contains("completeness")),
            "{r}"
        );
        let r = Checker::new().complete_for(both, [1].into()).check(&logs);
        assert!(r.ok(), "{r}");
    }
}
