//! Forming the first view.
//!
//! The node whose `local_ip:gms_port` is the configured contact starts the group: it accepts
//! join requests on its GMS port, and after each one asks the layout whether the members so far
//! provision every shard. Once they do, it sends the view to every joiner (`Prepare`), waits
//! for each to acknowledge, and then commits it. A joiner that fails meanwhile is dropped, the
//! others are told to forget the prepared view (`Abort`), and the leader tries again with the
//! members that remain — waiting for more joins if they no longer suffice.
//!
//! Every other node connects to the contact (retrying until the contact is up), asks to join,
//! follows a redirect to the leader if the contact is not the leader, and waits for a view it
//! belongs to to be committed. Refusals (an id already in use, another protocol version) end
//! the join with an error that says so. A single node whose layout needs only itself forms its
//! group alone.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::restart::{self, Restart, RestartInfo};
use super::view::{MemberInfo, View};
use super::wire::{read_msg, write_msg, GmsMessage, Refusal, WireError, PROTOCOL_VERSION};
use super::GmsError;
use crate::auth::{claims_match, Auth};
use crate::layout::LayoutError;
use crate::multicast::SubgroupSpec;
use crate::NodeId;
use derecho_fabric::secure::{Peer, Role, Stream};

/// Computes the subgroups of a member list (in rank order), given the previous view when
/// there is one (so that survivors can keep their shards), or says why the members do not
/// suffice yet (typically [`LayoutError::Inadequate`]).
pub type LayoutFn = Arc<
    dyn Fn(&[NodeId], Option<&super::View>) -> Result<Vec<SubgroupSpec>, LayoutError> + Send + Sync,
>;

/// Why the members so far do not make the first view yet.
#[derive(Debug, thiserror::Error)]
enum NotYet {
    /// The layout cannot provision them.
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// Their layout does not fit the restart plan.
    #[error(transparent)]
    Restart(#[from] restart::PlanMismatch),
}

/// Time bounds of the membership protocol.
#[derive(Clone, Debug)]
pub struct GmsTimeouts {
    /// How long a joiner waits for a committed view (`join_timeout_ms`, default 10 minutes:
    /// the group forms only when enough nodes have joined).
    pub join: Duration,
    /// How long the leader waits for each joiner's acknowledgement (`join_ack_timeout_ms`,
    /// default 10 s).
    pub ack: Duration,
    /// Bound on reading one message from a new connection (`gms_handshake_timeout_ms`,
    /// default 5 s).
    pub handshake: Duration,
    /// How long a restart leader waits, once its quorum is met, for the rest of the last
    /// view's members (`restart_timeout_ms`, default 2 s).
    pub restart_grace: Duration,
}

impl Default for GmsTimeouts {
    /// The defaults of `[DERECHO] join_timeout_ms`, `join_ack_timeout_ms` and
    /// `gms_handshake_timeout_ms`.
    fn default() -> Self {
        crate::config::DerechoSection::default().gms_timeouts()
    }
}

/// The first view and the joiners' connections, kept for later membership traffic.
pub struct Formed {
    /// The committed view.
    pub view: View,
}

/// Runs the leader's side: accepts joins on `listener` until the layout is adequate and the
/// view is committed, or `stop` is set. With logs (`restart`, or joiners that report theirs)
/// the first view is a total restart: it waits for the quorum of [`super::restart::assess`],
/// then up to `timeouts.restart_grace` for the rest of the last view, and carries the
/// transfers that restore every persistent shard from its longest log.
pub(crate) fn lead(
    listener: &TcpListener,
    auth: &Auth,
    me: MemberInfo,
    layout: &LayoutFn,
    timeouts: &GmsTimeouts,
    stop: &AtomicBool,
    restart: Option<&RestartInfo>,
) -> Result<Formed, GmsError> {
    listener
        .set_nonblocking(true)
        .map_err(|e| GmsError::io("making the GMS listener non-blocking", e))?;
    let mut joiners: Vec<(MemberInfo, Stream)> = Vec::new();
    let mut reports: BTreeMap<NodeId, RestartInfo> = BTreeMap::new();
    let mut changed = true;
    let mut last_reason = String::new();
    // When the restart quorum was first met (reset whenever it is lost).
    let mut quorum_since: Option<Instant> = None;
    // Connections are authenticated and their first message read on threads of their own, so
    // that a silent one never holds up a joiner behind it.
    let (read_tx, read) = std::sync::mpsc::channel();
    let reading = derecho_fabric::sync::Gate::new(MAX_OPENING, MAX_OPENING / 2);
    let leader = SocketAddr::new(me.ip, me.gms_port);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(GmsError::Stopped);
        }
        match listener.accept() {
            Ok((tcp, from)) => {
                let opening = Opening {
                    auth,
                    leader,
                    handshake: timeouts.handshake,
                    gate: &reading,
                    done: &read_tx,
                };
                opening.start(tcp, from);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => tracing::warn!(error = %e, "GMS accept failed"),
        }
        while let Ok(first) = read.try_recv() {
            if let Some((j, report)) = admit(first, &me, &joiners) {
                tracing::info!(
                    node = j.0.id,
                    restarting = report.is_some(),
                    "node joined the forming group"
                );
                match report {
                    Some(r) => reports.insert(j.0.id, r),
                    None => reports.remove(&j.0.id),
                };
                joiners.push(j);
                changed = true;
            }
        }
        let grace_over = quorum_since.is_some_and(|t| t.elapsed() >= timeouts.restart_grace);
        if changed || grace_over {
            changed = false;
            let mut members = vec![me.clone()];
            members.extend(joiners.iter().map(|(m, _)| m.clone()));
            let ids: Vec<NodeId> = members.iter().map(|m| m.id).collect();
            reports.retain(|id, _| ids.contains(id));
            let participants: Vec<(NodeId, Option<&RestartInfo>)> = ids
                .iter()
                .map(|id| {
                    let r = if *id == me.id {
                        restart
                    } else {
                        reports.get(id)
                    };
                    (*id, r)
                })
                .collect();
            let plan = match restart::assess(&participants) {
                Restart::Fresh => None,
                Restart::Wait(reason) => {
                    let reason = reason.to_string();
                    quorum_since = None;
                    if reason != last_reason {
                        tracing::info!(members = ?ids, %reason, "total restart: waiting for more nodes");
                        last_reason = reason;
                    }
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                Restart::Ready(plan) => {
                    let since = *quorum_since.get_or_insert_with(Instant::now);
                    if !plan.everyone && since.elapsed() < timeouts.restart_grace {
                        // Wait out the grace period for the rest of the last view.
                        std::thread::sleep(Duration::from_millis(5));
                        continue;
                    }
                    Some(plan)
                }
            };
            let basis = plan.as_ref().map(|p| restart::layout_basis(&p.last));
            let laid_out = layout(&ids, basis.as_ref()).map_err(NotYet::from);
            let outcome = laid_out.and_then(|subgroups| {
                let mut view = View {
                    vid: plan.as_ref().map_or(0, |p| p.vid),
                    members,
                    subgroups,
                    joined: Vec::new(),
                    transfers: Vec::new(),
                    inadequate: None,
                    held: Vec::new(),
                };
                if let Some(p) = &plan {
                    view.transfers = restart::transfers(p, &view)?;
                }
                Ok(view)
            });
            match outcome {
                Ok(view) => {
                    if plan.is_some() {
                        tracing::info!(vid = view.vid, members = ?ids, transfers = view.transfers.len(),
                            "total restart: proposing the restart view");
                    }
                    let failed = prepare(&view, &mut joiners, timeouts);
                    if failed.is_empty() {
                        for (m, s) in &mut joiners {
                            if let Err(e) = write_msg(s, &GmsMessage::Commit { vid: view.vid }) {
                                // Committed anyway: the view is final once every ack is in.
                                tracing::warn!(node = m.id, error = %e, "commit not delivered");
                            }
                        }
                        return Ok(Formed { view });
                    }
                    tracing::warn!(
                        ?failed,
                        "joiners failed during the first view's commit; retrying"
                    );
                    joiners.retain(|(m, _)| !failed.contains(&m.id));
                    for (_, s) in &mut joiners {
                        // Best effort: a joiner that misses the abort sees the next prepare.
                        let _ = write_msg(s, &GmsMessage::Abort { vid: view.vid });
                    }
                    changed = true;
                }
                Err(reason) => {
                    let reason = reason.to_string();
                    if reason != last_reason {
                        tracing::info!(members = ?ids, %reason, "waiting for more nodes to join");
                        last_reason = reason;
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Reads a join request from a new connection and answers refusals; returns the joiner if it
/// is admitted, with its restart report if it has logs.
fn admit(
    first: FirstMessage,
    me: &MemberInfo,
    joiners: &[(MemberInfo, Stream)],
) -> Option<((MemberInfo, Stream), Option<RestartInfo>)> {
    let FirstMessage {
        mut stream,
        peer,
        msg,
        from,
    } = first;
    let Some((version, member, report)) = msg.as_join() else {
        tracing::warn!(%from, "ignored a GMS connection that did not start with a join request");
        return None;
    };
    if let Err(why) = claims_match(peer, member.id) {
        tracing::warn!(%from, "refused a join: {why}");
        return None;
    }
    let refuse = |s: &mut Stream, r: Refusal| {
        tracing::warn!(%from, node = member.id, refusal = ?r, "refused a join");
        // Best effort: the refusal is logged here; the connection closes either way.
        let _ = write_msg(s, &GmsMessage::Refused(r));
        None
    };
    if version != PROTOCOL_VERSION {
        return refuse(
            &mut stream,
            Refusal::VersionMismatch {
                expected: PROTOCOL_VERSION,
            },
        );
    }
    if member.id == me.id || joiners.iter().any(|(m, _)| m.id == member.id) {
        return refuse(&mut stream, Refusal::IdInUse);
    }
    // Joiners wait as long as it takes for the group to form.
    let _ = stream.set_read_timeout(None);
    Some(((member, stream), report))
}

/// Most connections to a forming leader's GMS port being authenticated and read at once (half
/// of them from one address).
const MAX_OPENING: usize = 32;

/// A connection to a forming leader after its handshake, with its first message.
struct FirstMessage {
    stream: Stream,
    peer: Option<Peer>,
    msg: GmsMessage,
    from: SocketAddr,
}

/// What a thread that reads a new connection's first message needs.
struct Opening<'a> {
    auth: &'a Auth,
    /// This forming leader's GMS address, the answer to a probe.
    leader: SocketAddr,
    handshake: Duration,
    gate: &'a Arc<derecho_fabric::sync::Gate>,
    done: &'a std::sync::mpsc::Sender<FirstMessage>,
}

impl Opening<'_> {
    /// Authenticates `tcp` and reads its first message on a thread of its own (at most
    /// [`MAX_OPENING`] at once): a probe is answered there, anything else goes to the leader's
    /// loop through `done`.
    fn start(&self, tcp: TcpStream, from: SocketAddr) {
        let (auth, done) = (self.auth.clone(), self.done.clone());
        let (leader, handshake) = (self.leader, self.handshake);
        let started = self.gate.spawn(Some(from.ip()), "gms-open", move || {
            if let Some(first) = read_first(tcp, from, &auth, leader, handshake) {
                // The leader may have formed its group meanwhile; the connection closes.
                drop(done.send(first));
            }
        });
        if let Err(e) = started {
            tracing::warn!(%from, "closed a GMS connection: {e}");
        }
    }
}

/// Authenticates a new connection and reads its first message; answers a probe itself.
fn read_first(
    tcp: TcpStream,
    from: SocketAddr,
    auth: &Auth,
    leader: SocketAddr,
    handshake: Duration,
) -> Option<FirstMessage> {
    // Socket options fail only on a closed socket, which the read below reports.
    let _ = tcp.set_nonblocking(false);
    let (mut stream, peer) = match super::accept_gms(auth, tcp) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%from, error = %e, "refused a GMS connection");
            return None;
        }
    };
    let _ = stream.set_read_timeout(Some(handshake));
    let _ = stream.set_write_timeout(Some(handshake));
    let _ = stream.set_nodelay(true);
    let msg = match read_msg(&mut stream) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(%from, error = %e, "ignored a GMS connection");
            return None;
        }
    };
    if matches!(msg, GmsMessage::Probe) {
        // A restarting node looking for its restart leader: this node leads a forming group.
        // Best effort: a prober that misses the answer asks again.
        let _ = write_msg(&mut stream, &GmsMessage::Forming { leader });
        return None;
    }
    Some(FirstMessage {
        stream,
        peer,
        msg,
        from,
    })
}

/// Sends the view to every joiner and collects acknowledgements. Returns the joiners that
/// failed.
fn prepare(
    view: &View,
    joiners: &mut [(MemberInfo, Stream)],
    timeouts: &GmsTimeouts,
) -> Vec<NodeId> {
    let mut failed = Vec::new();
    for (m, s) in joiners.iter_mut() {
        if let Err(e) = write_msg(s, &GmsMessage::Prepare(view.clone())) {
            tracing::warn!(node = m.id, error = %e, "could not send the view");
            failed.push(m.id);
        }
    }
    for (m, s) in joiners.iter_mut() {
        if failed.contains(&m.id) {
            continue;
        }
        // Fails only on a closed socket, which the read reports.
        let _ = s.set_read_timeout(Some(timeouts.ack));
        match read_msg(s) {
            Ok(GmsMessage::Ack { vid }) if vid == view.vid => {}
            Ok(other) => {
                tracing::warn!(node = m.id, ?other, "expected an acknowledgement");
                failed.push(m.id);
            }
            Err(e) => {
                tracing::warn!(node = m.id, error = %e, "no acknowledgement");
                failed.push(m.id);
            }
        }
        // As above: a closed socket shows at its next use.
        let _ = s.set_read_timeout(None);
    }
    failed
}

/// How long a contact node waits for an answer when it asks whether a group already runs.
pub const PROBE_BOUND: Duration = Duration::from_secs(1);

/// Asks each of `peers` (in parallel, bounded by [`PROBE_BOUND`]) whether a group is running
/// there, and returns the GMS address of the running group's leader, if one answered. A contact
/// node that restarts asks its configured peers first, so that it rejoins the group that went
/// on without it instead of founding a second one. Peers that are still forming a group (or
/// are down) do not answer and are not waited for longer than the bound.
pub(crate) fn find_running(peers: &[SocketAddr], auth: &Auth) -> Option<(SocketAddr, u64)> {
    let (tx, rx) = std::sync::mpsc::channel();
    for &peer in peers {
        let (tx, auth) = (tx.clone(), auth.clone());
        // Detached on purpose: a probe that outlives the bound ends at its own timeouts.
        std::thread::spawn(move || {
            if let Some(found) = probe(peer, &auth) {
                // The receiver is gone once the bound has passed: a late answer is moot.
                let _ = tx.send(found);
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + PROBE_BOUND;
    let mut best: Option<(SocketAddr, u64)> = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            // The most advanced view wins (a member that has not seen a change yet may name
            // an old leader; its redirect still leads to the group).
            Ok(found) => {
                if best.is_none_or(|b| found.1 > b.1) {
                    best = Some(found);
                }
            }
            Err(_) => return best,
        }
    }
}

/// One probe: the leader's address and the view id, if `peer` runs a group.
fn probe(peer: SocketAddr, auth: &Auth) -> Option<(SocketAddr, u64)> {
    match ask(peer, auth)? {
        GmsMessage::Running { vid, leader } => Some((leader, vid)),
        _ => None,
    }
}

/// Sends [`GmsMessage::Probe`] to `peer` and returns its answer (bounded by [`PROBE_BOUND`]).
fn ask(peer: SocketAddr, auth: &Auth) -> Option<GmsMessage> {
    let mut s = match auth.dial(&peer, PROBE_BOUND, Role::Gms, None) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            tracing::warn!(%peer, error = %e, "a GMS peer refused this node's credentials");
            return None;
        }
        Err(_) => return None,
    };
    // Socket options fail only on a closed socket, which the write below reports.
    let _ = s.set_read_timeout(Some(PROBE_BOUND));
    let _ = s.set_write_timeout(Some(PROBE_BOUND));
    write_msg(&mut s, &GmsMessage::Probe).ok()?;
    read_msg(&mut s).ok()
}

/// Where a restarting node goes: the first of `leaders` (restart leaders in priority order)
/// that leads a running or forming group, or, once every leader ranked before `mine` has been
/// silent for `rank × restart_grace`, nowhere (it leads itself). `None` from a node that is
/// no restart leader means: keep looking. Bounded by `deadline`.
fn find_restart_leader(
    leaders: &[SocketAddr],
    auth: &Auth,
    mine: Option<usize>,
    grace: Duration,
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<Option<SocketAddr>, GmsError> {
    let began = Instant::now();
    loop {
        if stop.load(Ordering::SeqCst) {
            return Err(GmsError::Stopped);
        }
        for (rank, &peer) in leaders.iter().enumerate() {
            if Some(rank) == mine {
                continue;
            }
            if let Some(GmsMessage::Running { leader, .. } | GmsMessage::Forming { leader }) =
                ask(peer, auth)
            {
                return Ok(Some(leader));
            }
        }
        if let Some(rank) = mine {
            // Every leader ranked before this one has had `rank` grace periods to answer.
            let waited = grace.saturating_mul(u32::try_from(rank).unwrap_or(u32::MAX));
            if began.elapsed() >= waited {
                return Ok(None);
            }
        }
        if Instant::now() >= deadline {
            return Err(GmsError::Timeout(format!(
                "no restart leader of {leaders:?} answered"
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A total restart with backup restart leaders (`enable_backup_restart_leaders`): this node,
/// which has logs, joins the first of `leaders` that leads a running or forming group; if none
/// does and this node is one of them, it leads the restart once every leader ranked before it
/// has been silent for a grace period each (`restart_timeout_ms`). Two leaders can still both
/// start forming if one returns just as the next takes over, or if one is too busy to answer
/// a probe within [`PROBE_BOUND`]; the quorum rule (a strict majority of the last view) lets
/// at most one of them restart the group. If their followers split so that neither has a
/// majority, both wait: stopping one of them lets its followers find the other. A node finds
/// its own rank by its `local_ip:gms_port` exactly as written in `restart_leaders`.
// The listener and the credentials belong together but are owned by different parts of the
// node; bundling them for this one call would only move the count.
#[allow(clippy::too_many_arguments)]
pub(crate) fn restart_with_backups(
    listener: &TcpListener,
    auth: &Auth,
    me: MemberInfo,
    leaders: &[SocketAddr],
    layout: &LayoutFn,
    timeouts: &GmsTimeouts,
    stop: &AtomicBool,
    restart: &RestartInfo,
) -> Result<View, GmsError> {
    let deadline = Instant::now() + timeouts.join;
    let mine = leaders
        .iter()
        .position(|a| *a == SocketAddr::new(me.ip, me.gms_port));
    match find_restart_leader(leaders, auth, mine, timeouts.restart_grace, deadline, stop)? {
        Some(leader) => {
            tracing::info!(%leader, "total restart: joining the restart leader");
            join(leader, auth, &me, timeouts, stop, Some(restart))
        }
        None => {
            tracing::info!(
                rank = mine,
                "total restart: no restart leader ranked before this node answered; leading"
            );
            Ok(lead(listener, auth, me, layout, timeouts, stop, Some(restart))?.view)
        }
    }
}

/// Runs a joiner's side: asks `contact` (following redirects) to join and waits for a view
/// that contains `me` to be committed.
pub(crate) fn join(
    contact: SocketAddr,
    auth: &Auth,
    me: &MemberInfo,
    timeouts: &GmsTimeouts,
    stop: &AtomicBool,
    restart: Option<&RestartInfo>,
) -> Result<View, GmsError> {
    let deadline = Instant::now() + timeouts.join;
    let mut addr = contact;
    let mut redirects = 0u32;
    // Where to ask again when the node asked fails: the contact, then every member a redirect
    // named (the contact may be the node that failed).
    let mut known: Vec<SocketAddr> = vec![contact];
    // Why the last handshake failed, for the error if the deadline passes.
    let mut last_handshake: Option<String> = None;
    loop {
        let (tcp, reached) = connect_until(addr, &known, deadline, stop).map_err(|e| {
            match (e, &last_handshake) {
                (GmsError::Timeout(why), Some(h)) => {
                    GmsError::Timeout(format!("{why}; the last handshake failed: {h}"))
                }
                (e, _) => e,
            }
        })?;
        let mut stream = match auth.wrap_dialed(tcp, Role::Gms, None) {
            Ok(s) => s,
            // A refusal does not improve by asking again: the credentials differ.
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(GmsError::io(format!("authenticating with {reached}"), e))
            }
            // A busy or failing peer may answer the next time (the deadline bounds the whole).
            Err(e) => {
                tracing::warn!(%reached, error = %e, "the handshake failed; asking again");
                last_handshake = Some(e.to_string());
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
        };
        // Socket options fail only on a closed socket, which the write below reports.
        let _ = stream.set_nodelay(true);
        let remaining = |d: Instant| {
            d.saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1))
        };
        // As above.
        let _ = stream.set_write_timeout(Some(timeouts.handshake));
        let request = match restart {
            None => GmsMessage::Join {
                version: PROTOCOL_VERSION,
                member: me.clone(),
            },
            Some(r) => GmsMessage::Rejoin {
                version: PROTOCOL_VERSION,
                member: me.clone(),
                restart: Box::new(r.clone()),
            },
        };
        write_msg(&mut stream, &request)
            .map_err(|e| GmsError::wire(format!("sending the join request to {addr}"), e))?;
        let mut prepared: Option<View> = None;
        loop {
            if stop.load(Ordering::SeqCst) {
                return Err(GmsError::Stopped);
            }
            // Short reads so that `stop` is honoured; the deadline bounds the whole join.
            let _ =
                stream.set_read_timeout(Some(remaining(deadline).min(Duration::from_millis(200))));
            let msg = match read_msg(&mut stream) {
                Ok(m) => m,
                Err(WireError::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    if Instant::now() >= deadline {
                        return Err(GmsError::Timeout(format!(
                            "no committed view from {addr} within {:?}",
                            timeouts.join
                        )));
                    }
                    continue;
                }
                // The node holding the request failed (or closed): ask again, from the
                // contact. If the view with this node was committed meanwhile, the new leader
                // sends it; otherwise the request is queued anew.
                Err(WireError::Io(e)) => {
                    tracing::warn!(%addr, error = %e,
                        "lost the connection while waiting to be admitted; asking again");
                    std::thread::sleep(Duration::from_millis(100));
                    addr = contact;
                    redirects = 0;
                    break;
                }
                Err(e) => {
                    return Err(GmsError::wire(
                        format!("waiting for the view from {addr}"),
                        e,
                    ))
                }
            };
            match msg {
                GmsMessage::Redirect {
                    leader,
                    addr: to,
                    members,
                } => {
                    // Members may name a leader that has just failed until their view changes:
                    // after a few redirects, slow down (the join deadline bounds the whole).
                    redirects += 1;
                    if redirects > 8 {
                        std::thread::sleep(Duration::from_millis(200));
                    }
                    tracing::info!(leader, %to, "redirected to the leader");
                    for m in members.into_iter().chain([to]) {
                        if !known.contains(&m) && known.len() < MAX_KNOWN {
                            known.push(m);
                        }
                    }
                    addr = to;
                    break;
                }
                GmsMessage::Refused(r) => return Err(GmsError::Refused(r)),
                GmsMessage::Prepare(view) => {
                    if view.rank_of(me.id).is_none() {
                        return Err(GmsError::Protocol(format!(
                            "prepared view {} does not contain this node",
                            view.vid
                        )));
                    }
                    write_msg(&mut stream, &GmsMessage::Ack { vid: view.vid })
                        .map_err(|e| GmsError::wire("acknowledging the view", e))?;
                    prepared = Some(view);
                }
                GmsMessage::Commit { vid } => match prepared.take() {
                    Some(view) if view.vid == vid => return Ok(view),
                    _ => {
                        return Err(GmsError::Protocol(format!(
                            "commit of view {vid} that was not prepared"
                        )))
                    }
                },
                GmsMessage::Abort { vid } => {
                    tracing::info!(
                        vid,
                        "the leader abandoned a prepared view; waiting for the next"
                    );
                    prepared = None;
                }
                other => {
                    return Err(GmsError::Protocol(format!(
                        "unexpected message while joining: {other:?}"
                    )))
                }
            }
        }
    }
}

/// Most GMS addresses a joiner remembers from redirects.
const MAX_KNOWN: usize = 1024;

/// Connects to `addr`, or when it cannot be reached to the first of `others` that can, trying
/// again until `deadline`.
fn connect_until(
    addr: SocketAddr,
    others: &[SocketAddr],
    deadline: Instant,
    stop: &AtomicBool,
) -> Result<(TcpStream, SocketAddr), GmsError> {
    let mut last = String::new();
    loop {
        for a in std::iter::once(&addr).chain(others.iter().filter(|a| **a != addr)) {
            if stop.load(Ordering::SeqCst) {
                return Err(GmsError::Stopped);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(GmsError::Timeout(format!(
                    "could not reach the contact {addr} (nor any other known member): {last}"
                )));
            }
            match TcpStream::connect_timeout(a, (deadline - now).min(Duration::from_secs(1))) {
                Ok(s) => return Ok((s, *a)),
                Err(e) => last = format!("{a}: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::net::{IpAddr, Ipv4Addr};

    use super::*;

    fn member(id: NodeId, gms: SocketAddr) -> MemberInfo {
        MemberInfo {
            id,
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            gms_port: gms.port(),
            fabric_port: 1,
            state_transfer_port: 2,
            external_port: 3,
        }
    }

    fn listen() -> (TcpListener, SocketAddr) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let a = l.local_addr().unwrap();
        (l, a)
    }

    /// Accepts one connection and reads its join request.
    fn accept_join(l: &TcpListener) -> (TcpStream, MemberInfo) {
        let (mut s, _) = l.accept().unwrap();
        match read_msg(&mut s).unwrap() {
            GmsMessage::Join { member, .. } => (s, member),
            other => panic!("expected a join request, got {other:?}"),
        }
    }

    /// Issue #14, hole 6: a joiner whose request was held by a leader that then failed used
    /// to give up with an error (or wait at a dead contact). It asks again, through the members
    /// the redirect named, and is admitted by the new leader.
    #[test]
    fn a_joiner_whose_leader_fails_asks_again_and_is_admitted_by_the_next_leader() {
        let (contact, contact_addr) = listen();
        let (leader, leader_addr) = listen();
        let (next, next_addr) = listen();
        let peers = vec![leader_addr, contact_addr, next_addr];
        let servers = std::thread::spawn(move || {
            // The contact redirects to the leader, then fails.
            let (mut s, _) = accept_join(&contact);
            write_msg(
                &mut s,
                &GmsMessage::Redirect {
                    leader: 0,
                    addr: leader_addr,
                    members: peers,
                },
            )
            .unwrap();
            drop((s, contact));
            // The leader queues the request, then fails.
            let (s, _) = accept_join(&leader);
            drop((s, leader));
            // The next leader admits the joiner.
            let (mut s, joiner) = accept_join(&next);
            let view = View {
                vid: 3,
                members: vec![member(2, next_addr), joiner],
                joined: vec![9],
                ..View::default()
            };
            write_msg(&mut s, &GmsMessage::Prepare(view.clone())).unwrap();
            assert!(matches!(
                read_msg(&mut s).unwrap(),
                GmsMessage::Ack { vid: 3 }
            ));
            write_msg(&mut s, &GmsMessage::Commit { vid: 3 }).unwrap();
            view
        });
        let timeouts = GmsTimeouts {
            join: Duration::from_secs(20),
            ..GmsTimeouts::default()
        };
        let me = member(9, SocketAddr::from(([127, 0, 0, 1], 9)));
        let view = join(
            contact_addr,
            &Auth::open(me.id),
            &me,
            &timeouts,
            &AtomicBool::new(false),
            None,
        )
        .expect("the joiner is admitted by the next leader");
        assert_eq!(view, servers.join().unwrap());
    }

    /// A connection that opens the forming leader's port and says nothing does not hold up
    /// the joiner behind it: the leader used to read it first, for the whole handshake bound,
    /// before it accepted the next connection.
    #[test]
    fn a_silent_connection_does_not_hold_up_the_forming_group() {
        let (l, addr) = listen();
        let leader = member(0, addr);
        let layout: LayoutFn = Arc::new(|ids: &[NodeId], _: Option<&View>| {
            if ids.len() < 2 {
                Err(LayoutError::Inadequate {
                    subgroup: crate::layout::SubgroupId(0),
                    shard: 0,
                    have: ids.len(),
                    need: 2,
                })
            } else {
                Ok(Vec::new())
            }
        });
        let timeouts = GmsTimeouts {
            join: Duration::from_secs(5),
            handshake: Duration::from_secs(60),
            ..GmsTimeouts::default()
        };
        let lead_timeouts = timeouts.clone();
        let formed = std::thread::spawn(move || {
            lead(
                &l,
                &Auth::open(0),
                leader,
                &layout,
                &lead_timeouts,
                &AtomicBool::new(false),
                None,
            )
            .map(|f| f.view.members.len())
        });
        let silent = TcpStream::connect(addr).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let me = member(1, SocketAddr::from(([127, 0, 0, 1], 9)));
        let view = join(
            addr,
            &Auth::open(1),
            &me,
            &timeouts,
            &AtomicBool::new(false),
            None,
        )
        .expect("the joiner is admitted while the silent connection is open");
        assert_eq!(view.members.len(), 2);
        assert_eq!(formed.join().unwrap().unwrap(), 2);
        drop(silent);
    }
}
