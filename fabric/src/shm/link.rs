//! One shm link: the write path (a copy into the peer's mapped region plus a record in the peer's
//! inbox), the bell thread that turns records of the peer's writes into doorbell rings and
//! notifications, and the side-channel thread (lookups, goodbye, failure detection).

use std::collections::HashMap;
use std::io::BufReader;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use super::mapping::{self, Entry, Inbox, Mapping, ENTRY_IMM, LIVE, REGION_HEADER};
use super::wire::{kind, Msg, FOUND};
use super::Inner;
use crate::secure::{ReadHalf, Stream, WriteHalf};
use crate::side_channel::link::{not_looked_up, LinkState, Queries, ReceiveFailure, RegionCache};
use crate::side_channel::{self, SideLink};
use crate::sync::lock;
use crate::{
    CompletionSource, FabricError, NodeId, Notification, Region, RegionId, RegionSpec,
    RemoteRegion, WriteRequest,
};

/// How long the bell thread sleeps at most before looking at its inbox again (a safety net; it
/// is woken through the futex whenever a record arrives).
const BELL_NAP: Duration = Duration::from_secs(1);

/// A peer's region, mapped into this process.
struct PeerRegion {
    key: u64,
    map: Arc<Mapping>,
    /// The peer's bytes, wrapped so that copies use the atomic discipline of [`Region`].
    view: Region,
    revoked: AtomicBool,
}

/// The producer side of the link: the peer's inbox and the region last written.
struct Tx {
    inbox: Inbox,
    tail: u64,
    last: Option<Arc<PeerRegion>>,
}

type Answer = Option<(RemoteRegion, String)>;

/// An shm link to one peer.
pub(crate) struct ShmLink {
    state: Arc<LinkState>,
    dir: PathBuf,
    sock: Mutex<WriteHalf>,
    tx: Mutex<Tx>,
    inbox: Inbox,
    queries: Queries<Answer>,
    peer_regions: Mutex<HashMap<u64, Arc<PeerRegion>>>,
    send_timeout: Duration,
}

impl ShmLink {
    /// Wraps a handshaken side channel and both inboxes, and starts the link's threads.
    pub(crate) fn start(
        fabric: &Arc<Inner>,
        peer: NodeId,
        incarnation: u64,
        stream: Stream,
        mine: Inbox,
        theirs: Inbox,
    ) -> Result<Arc<Self>, FabricError> {
        let ctx = |what: &str| format!("{what} for shm link to node {peer}");
        let (reader, writer, control) =
            side_channel::link_stream(stream, fabric.config.send_timeout, peer)?;
        let link = Arc::new(ShmLink {
            state: Arc::new(LinkState::with_control(
                peer,
                incarnation,
                fabric.hub.reporter(),
                control,
            )),
            dir: fabric.config.dir.clone(),
            sock: Mutex::new(writer),
            tx: Mutex::new(Tx {
                tail: theirs.tail().load(Ordering::Acquire),
                inbox: theirs,
                last: None,
            }),
            inbox: mine,
            queries: Queries::new(),
            peer_regions: Mutex::new(HashMap::new()),
            send_timeout: fabric.config.send_timeout,
        });
        let rx = Arc::clone(&link);
        let weak = Arc::downgrade(fabric);
        std::thread::Builder::new()
            .name(format!("shm-rx-{peer}"))
            .spawn(move || rx.receive_loop(reader, weak))
            .map_err(|e| FabricError::io(ctx("spawning the side-channel thread"), e))?;
        let bell = Arc::clone(&link);
        let weak = Arc::downgrade(fabric);
        let spawned = std::thread::Builder::new()
            .name(format!("shm-bell-{peer}"))
            .spawn(move || bell.bell_loop(weak));
        if let Err(e) = spawned {
            link.fail_with("cannot spawn the bell thread".into(), false);
            return Err(FabricError::io(ctx("spawning the bell thread"), e));
        }
        Ok(link)
    }

    /// Our inbox (the peer writes its records into it).
    pub(crate) fn own_inbox(&self) -> &Inbox {
        &self.inbox
    }

    fn link_failed_error(&self) -> FabricError {
        self.state.error()
    }

    fn send(&self, msg: &Msg) -> Result<(), FabricError> {
        let sent = msg.write_to(&mut *lock(&self.sock));
        if let Err(e) = sent {
            self.fail_with(format!("side channel send failed: {e}"), true);
            return Err(self.link_failed_error());
        }
        Ok(())
    }

    /// Applies one write: copies the bytes into the peer's mapping, then records the write in
    /// the peer's inbox so its bell thread rings the doorbell (and queues the immediate).
    fn post(&self, req: &WriteRequest<'_>) -> Result<(), FabricError> {
        if self.state.is_failed() {
            return Err(self.link_failed_error());
        }
        req.validate(self.state.peer())?;
        let mut tx = lock(&self.tx);
        if self.state.is_failed() {
            return Err(self.link_failed_error());
        }
        let target = match &tx.last {
            Some(p) if p.key == req.dst.key => Arc::clone(p),
            _ => {
                let found = lock(&self.peer_regions).get(&req.dst.key).cloned();
                let Some(p) = found else {
                    return Err(not_looked_up(req, self.state.peer()));
                };
                tx.last = Some(Arc::clone(&p));
                p
            }
        };
        let writers = mapping::region_writers(&target.map);
        writers.fetch_add(1, Ordering::SeqCst);
        let live = mapping::region_state(&target.map).load(Ordering::SeqCst) == LIVE;
        let copied = if live {
            req.src
                .copy_to(req.src_offset, &target.view, req.dst_offset, req.len)
        } else {
            Ok(())
        };
        writers.fetch_sub(1, Ordering::SeqCst);
        copied?;
        if !live {
            // The peer deregistered it: the write is discarded, as on every backend.
            target.revoked.store(true, Ordering::Relaxed);
            return Ok(());
        }
        let entry = Entry {
            key: req.dst.key,
            len: req.len as u64,
            imm: req.imm.unwrap_or(0),
            flags: if req.imm.is_some() { ENTRY_IMM } else { 0 },
        };
        self.record(&mut tx, entry)
    }

    /// Publishes a write record in the peer's inbox, waiting (bounded by the send timeout) while
    /// the ring is full.
    fn record(&self, tx: &mut Tx, entry: Entry) -> Result<(), FabricError> {
        let cap = tx.inbox.capacity();
        let mut waited: Option<Instant> = None;
        let mut spins = 0u32;
        while tx
            .tail
            .wrapping_sub(tx.inbox.head().load(Ordering::Acquire))
            >= cap
        {
            if self.state.is_failed() {
                return Err(self.link_failed_error());
            }
            let since = *waited.get_or_insert_with(Instant::now);
            if since.elapsed() >= self.send_timeout {
                self.fail_with(
                    format!(
                        "inbox full for {:?}: peer not draining notifications",
                        self.send_timeout
                    ),
                    true,
                );
                return Err(self.link_failed_error());
            }
            tx.inbox.wake();
            spins += 1;
            if spins < 200 {
                std::hint::spin_loop();
            } else {
                std::thread::sleep(Duration::from_micros(50));
            }
        }
        let urgent = entry.flags & ENTRY_IMM != 0;
        tx.inbox.put(tx.tail, entry);
        tx.tail += 1;
        tx.inbox.tail().store(tx.tail, Ordering::SeqCst);
        // The bell thread rings doorbells (for parked pollers) and queues immediates; a poller
        // that spins sees the bytes without it. Waking it costs a system call here and a
        // context switch there, so only when it matters: an immediate, a parked poller, or a
        // ring half full (so a stream of writes never waits for room). The owner publishes
        // `parked` before it checks for pending records (see `Inner::parking`): one side sees
        // the other.
        let outstanding = tx
            .tail
            .wrapping_sub(tx.inbox.head().load(Ordering::Acquire));
        if urgent
            || outstanding.saturating_mul(2) >= cap
            || tx.inbox.parked().load(Ordering::SeqCst) != 0
        {
            tx.inbox.wake();
        }
        Ok(())
    }

    /// Drains the records of the peer's writes: rings each target region's doorbell and queues
    /// immediates, in order; sleeps on the inbox futex while there is nothing to do.
    fn bell_loop(self: Arc<Self>, fabric: Weak<Inner>) {
        let inbox = &self.inbox;
        let cap = inbox.capacity();
        let mut head = inbox.head().load(Ordering::Acquire);
        let mut cache = RegionCache::default();
        loop {
            if self.state.is_failed() {
                return;
            }
            let tail = inbox.tail().load(Ordering::Acquire);
            if tail != head {
                if tail.wrapping_sub(head) > cap {
                    self.fail_with(
                        format!("protocol violation: inbox tail {tail} ahead of head {head}"),
                        true,
                    );
                    return;
                }
                let Some(f) = fabric.upgrade() else { return };
                while head != tail {
                    let e = inbox.get(head);
                    let region =
                        cache.get(e.key, f.regions.generation(), |key| f.region_by_key(key));
                    if let Some(r) = region {
                        if e.flags & ENTRY_IMM != 0 {
                            let n = Notification {
                                from: self.state.peer(),
                                imm: e.imm,
                                len: e.len as usize,
                            };
                            let me = &self;
                            let ff = &f;
                            if !r.push_notification(n, &|| {
                                me.state.is_failed() || ff.hub.is_shut_down()
                            }) {
                                return;
                            }
                        }
                        r.ring();
                    }
                    head += 1;
                    inbox.head().store(head, Ordering::Release);
                }
                continue;
            }
            inbox.armed().store(1, Ordering::SeqCst);
            if inbox.tail().load(Ordering::SeqCst) != head || self.state.is_failed() {
                inbox.armed().store(0, Ordering::SeqCst);
                continue;
            }
            mapping::futex_wait(inbox.armed(), 1, BELL_NAP);
        }
    }

    fn receive_loop(self: Arc<Self>, stream: ReadHalf, fabric: Weak<Inner>) {
        let mut reader = BufReader::new(stream);
        let outcome: Result<(), ReceiveFailure> = loop {
            let msg = match Msg::read_from(&mut reader) {
                Ok(m) => m,
                Err(e) => break Err(ReceiveFailure::of_read(e)),
            };
            let Some(fabric) = fabric.upgrade() else {
                break Ok(());
            };
            match msg.kind {
                kind::QUERY => {
                    let answer = match fabric.region_file(RegionId(msg.f[0])) {
                        Some((key, len, name)) => {
                            Msg::new(kind::ANSWER, msg.word, [msg.f[0], key, len as u64])
                                .with_flags(FOUND)
                                .with_body(name.as_bytes())
                        }
                        None => Msg::new(kind::ANSWER, msg.word, [msg.f[0], 0, 0]),
                    };
                    if self.send(&answer).is_err() {
                        break Ok(());
                    }
                }
                kind::ANSWER => {
                    let found = (msg.flags & FOUND != 0).then(|| {
                        let region = RemoteRegion {
                            owner: self.state.peer(),
                            id: RegionId(msg.f[0]),
                            len: msg.f[2] as usize,
                            key: msg.f[1],
                            addr: 0,
                        };
                        (region, String::from_utf8_lossy(&msg.body).into_owned())
                    });
                    self.queries.answer(msg.word, found);
                }
                kind::GOODBYE => break Err(ReceiveFailure::Goodbye),
                other => break Err(ReceiveFailure::UnknownKind(other)),
            }
        };
        if let Err(reason) = outcome {
            self.fail_with(reason.to_string(), true);
        }
    }

    fn query_once(&self, id: RegionId, deadline: Instant) -> Result<Answer, FabricError> {
        let answer = self.queries.ask(&self.state, deadline, |qid| {
            self.send(&Msg::new(kind::QUERY, qid, [id.0, 0, 0]))
        })?;
        Ok(answer.flatten())
    }

    /// Maps the peer's region file named in a lookup answer (once per key).
    fn map_peer_region(&self, r: &RemoteRegion, name: &str) -> Result<(), FabricError> {
        if lock(&self.peer_regions).contains_key(&r.key) {
            return Ok(());
        }
        if !mapping::valid_name(name) {
            self.fail_with(
                format!("protocol violation: region file name {name:?}"),
                true,
            );
            return Err(self.link_failed_error());
        }
        let map = Arc::new(Mapping::open(&self.dir.join(name), REGION_HEADER + r.len)?);
        mapping::check_region(&map, r.key, r.len)?;
        let data = map.base().as_ptr().wrapping_add(REGION_HEADER);
        let ptr = std::ptr::NonNull::new(data).ok_or_else(|| {
            FabricError::InvalidRegion(format!("null mapping of {}", map.path().display()))
        })?;
        // SAFETY: `ptr` points `REGION_HEADER` (64) bytes into a page-aligned shared mapping of
        // at least `REGION_HEADER + r.len` bytes (checked by `Mapping::open`), kept alive by the
        // `Arc<Mapping>` handed over as backing; every process touching it uses the atomic copy
        // discipline of `Region`.
        let view = unsafe {
            Region::from_external(
                r.owner,
                &RegionSpec::new(r.id, r.len),
                r.key,
                ptr,
                Box::new(Arc::clone(&map)),
            )
        }?;
        let pr = Arc::new(PeerRegion {
            key: r.key,
            map,
            view,
            revoked: AtomicBool::new(false),
        });
        lock(&self.peer_regions).entry(r.key).or_insert(pr);
        Ok(())
    }

    /// Whether a cached lookup still names a live region of the peer.
    fn still_live(&self, r: &RemoteRegion) -> bool {
        match lock(&self.peer_regions).get(&r.key) {
            Some(p) => {
                !p.revoked.load(Ordering::Relaxed)
                    && mapping::region_state(&p.map).load(Ordering::Acquire) == LIVE
            }
            None => false,
        }
    }
}

impl Drop for ShmLink {
    fn drop(&mut self) {
        mapping::remove_file(self.inbox.mapping().path());
    }
}

/// Completion source of the shm backend: a write is applied when `write_signaled` returns (the
/// copy is synchronous), so every ticket is complete.
struct Applied;

impl CompletionSource for Applied {
    fn poll_ticket(&self, _ticket: u64) -> Option<Result<(), FabricError>> {
        Some(Ok(()))
    }

    fn wait_ticket(&self, _ticket: u64, _timeout: Duration) -> Result<(), FabricError> {
        Ok(())
    }
}

impl SideLink for ShmLink {
    const NAME: &'static str = "ShmLink";

    fn state(&self) -> &Arc<LinkState> {
        &self.state
    }

    /// Marks the link failed; `report` says whether subscribers hear of it. Only the first call
    /// has an effect.
    fn fail_with(&self, reason: String, report: bool) {
        self.state.fail(&reason, report, || {
            // Wake the bell thread so it sees the failure and exits; remove our inbox file (the
            // peer's mapping of it stays valid until it unmaps).
            self.inbox.armed().store(0, Ordering::SeqCst);
            mapping::futex_wake(self.inbox.armed());
            mapping::remove_file(self.inbox.mapping().path());
            self.queries.wake();
        });
    }

    /// Sends a graceful goodbye (best effort) before a local shutdown.
    fn say_goodbye(&self) {
        if self.state.is_failed() {
            return;
        }
        if let Ok(mut s) = self.sock.try_lock() {
            // The peer may have gone already; it sees the link close either way.
            let _ = Msg::new(kind::GOODBYE, 0, [0, 0, 0]).write_to(&mut *s);
        }
    }

    fn remote_region(&self, id: RegionId, timeout: Duration) -> Result<RemoteRegion, FabricError> {
        let ask = |deadline| self.query_once(id, deadline);
        self.state.remote_region(
            id,
            timeout,
            |r| self.still_live(r),
            ask,
            |(found, name)| {
                self.map_peer_region(&found, &name)?;
                Ok(found)
            },
        )
    }

    fn post_write(&self, req: &WriteRequest<'_>, _signaled: bool) -> Result<u64, FabricError> {
        // The copy is done when `post` returns: every write is complete at once.
        self.post(req).map(|()| 0)
    }

    fn completions(&self) -> Arc<dyn CompletionSource> {
        Arc::new(Applied)
    }
}
