//! One tcp link: the sending half used by callers, and the receiver thread that applies the
//! peer's writes in order.
//!
//! Senders write frames straight into the socket from their own thread under a mutex (no hand-off
//! to a writer thread, so a small write costs one system call). The receiver thread never waits
//! for that mutex: the control frames it must send (ACKs, region answers) go into a small outbox
//! that whoever holds the send lock drains before releasing it. This keeps two nodes that both
//! fill their sockets from deadlocking on each other's acknowledgements.

use std::collections::VecDeque;
use std::io::{BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError, Weak};
use std::time::{Duration, Instant};

use super::wire::{self, kind, Header, HEADER_LEN};
use super::Inner;
use crate::secure::{ReadHalf, Stream, WriteHalf};
use crate::side_channel::link::{LinkState, Queries, ReceiveFailure, RegionCache};
use crate::side_channel::{self, SideLink};
use crate::sync::lock;
use crate::NodeId;
use crate::{FabricError, Notification, Region, RegionId, RemoteRegion, WriteRequest};

/// Writes up to this size are copied into one buffer with their header and sent with a single
/// system call; larger ones are streamed in chunks of this size.
const CHUNK: usize = 256 * 1024;

/// Most control frames (region answers) waiting in the outbox; beyond this the peer is
/// misbehaving (it asks faster than it reads) and further queries are not answered.
const MAX_OUTBOX: usize = 1024;

struct Sender {
    stream: WriteHalf,
    staging: Vec<u8>,
    issued: u64,
}

#[derive(Default)]
struct Outbox {
    ack: Option<u64>,
    frames: VecDeque<[u8; HEADER_LEN]>,
}

/// A tcp link to one peer.
pub(crate) struct TcpLink {
    state: Arc<LinkState>,
    send: Mutex<Sender>,
    outbox: Mutex<Outbox>,
    outbox_pending: AtomicBool,
    /// Outstanding region queries; an answer is the region if the peer has it.
    queries: Queries<Option<RemoteRegion>>,
    send_timeout: Duration,
}

impl TcpLink {
    /// Wraps an established, handshaken stream and starts its receiver thread.
    pub(crate) fn start(
        fabric: &Arc<Inner>,
        peer: NodeId,
        incarnation: u64,
        stream: Stream,
    ) -> Result<Arc<Self>, FabricError> {
        let send_timeout = fabric.config.send_timeout;
        let (reader, writer, control) = side_channel::link_stream(stream, send_timeout, peer)?;
        let link = Arc::new(TcpLink {
            state: Arc::new(LinkState::with_control(
                peer,
                incarnation,
                fabric.hub.reporter(),
                control,
            )),
            send: Mutex::new(Sender {
                stream: writer,
                staging: Vec::new(),
                issued: 0,
            }),
            outbox: Mutex::new(Outbox::default()),
            outbox_pending: AtomicBool::new(false),
            queries: Queries::new(),
            send_timeout,
        });
        let for_thread = Arc::clone(&link);
        let weak_fabric = Arc::downgrade(fabric);
        std::thread::Builder::new()
            .name(format!("fabric-rx-{peer}"))
            .spawn(move || for_thread.receive_loop(reader, weak_fabric))
            .map_err(|e| FabricError::io(format!("spawning the receiver of node {peer}"), e))?;
        Ok(link)
    }

    fn link_failed_error(&self) -> FabricError {
        self.state.error()
    }

    fn post(&self, req: &WriteRequest<'_>, signaled: bool) -> Result<u64, FabricError> {
        if self.state.is_failed() {
            return Err(self.link_failed_error());
        }
        req.validate(self.state.peer())?;
        let mut flags = 0;
        if signaled {
            flags |= wire::FLAG_SIGNALED;
        }
        if req.imm.is_some() {
            flags |= wire::FLAG_IMM;
        }
        let header = Header {
            kind: kind::WRITE,
            flags,
            word: req.imm.unwrap_or(0),
            a: req.dst.key,
            b: req.dst_offset as u64,
            c: req.len as u64,
        }
        .encode();
        let result = {
            let mut guard = lock(&self.send);
            let s = &mut *guard;
            let sent = send_write(s, &header, req);
            match sent {
                Ok(()) => {
                    s.issued += 1;
                    let ticket = s.issued;
                    self.drain_outbox(s).map(|()| ticket)
                }
                Err(e) => Err(e),
            }
        };
        match result {
            Ok(ticket) => {
                self.kick();
                Ok(ticket)
            }
            Err(e) => {
                let reason = if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut
                {
                    format!("send blocked for {:?}: peer not reading", self.send_timeout)
                } else {
                    format!("send failed: {e}")
                };
                self.fail_with(reason, true);
                Err(self.link_failed_error())
            }
        }
    }

    /// Sends queued control frames; the caller holds the send lock.
    fn drain_outbox(&self, s: &mut Sender) -> Result<(), std::io::Error> {
        if !self.outbox_pending.swap(false, Ordering::SeqCst) {
            return Ok(());
        }
        let (ack, frames) = {
            let mut ob = lock(&self.outbox);
            (ob.ack.take(), std::mem::take(&mut ob.frames))
        };
        if let Some(count) = ack {
            let frame = Header {
                kind: kind::ACK,
                flags: 0,
                word: 0,
                a: 0,
                b: count,
                c: 0,
            }
            .encode();
            s.stream.write_all(&frame)?;
        }
        for f in frames {
            s.stream.write_all(&f)?;
        }
        Ok(())
    }

    /// Flushes the outbox if nobody holds the send lock; if someone does, they flush it on
    /// their way out (they check after unlocking, and the flag is set before we try).
    fn kick(&self) {
        while self.outbox_pending.load(Ordering::SeqCst) {
            match self.send.try_lock() {
                Ok(mut s) => {
                    if let Err(e) = self.drain_outbox(&mut s) {
                        drop(s);
                        self.fail_with(format!("send failed: {e}"), true);
                        return;
                    }
                }
                Err(TryLockError::WouldBlock) => return,
                Err(TryLockError::Poisoned(p)) => {
                    let mut s = p.into_inner();
                    if self.drain_outbox(&mut s).is_err() {
                        return;
                    }
                }
            }
        }
    }

    fn queue_ack(&self, count: u64) {
        {
            let mut ob = lock(&self.outbox);
            ob.ack = Some(ob.ack.map_or(count, |c| c.max(count)));
        }
        self.outbox_pending.store(true, Ordering::SeqCst);
        self.kick();
    }

    fn queue_frame(&self, frame: [u8; HEADER_LEN]) {
        {
            let mut ob = lock(&self.outbox);
            if ob.frames.len() >= MAX_OUTBOX {
                tracing::warn!(
                    peer = self.state.peer(),
                    "control outbox full; dropping a region answer"
                );
                return;
            }
            ob.frames.push_back(frame);
        }
        self.outbox_pending.store(true, Ordering::SeqCst);
        self.kick();
    }

    fn receive_loop(self: Arc<Self>, stream: ReadHalf, fabric: Weak<Inner>) {
        let mut reader = BufReader::with_capacity(CHUNK, stream);
        let mut chunk = Vec::new();
        let mut applied: u64 = 0;
        let mut cache = RegionCache::default();
        let outcome: Result<(), ReceiveFailure> = loop {
            let mut hbuf = [0u8; HEADER_LEN];
            if let Err(e) = reader.read_exact(&mut hbuf) {
                break Err(ReceiveFailure::of_connection_read(e));
            }
            let h = match Header::decode(&hbuf) {
                Ok(h) => h,
                Err(e) => break Err(ReceiveFailure::BadFrame(e)),
            };
            let Some(fabric) = fabric.upgrade() else {
                break Ok(());
            };
            match h.kind {
                kind::WRITE => {
                    let region = cache.get(h.a, fabric.regions.generation(), |key| {
                        fabric.region_by_key(key)
                    });
                    let len = h.c;
                    if let Some(r) = &region {
                        let fits = usize::try_from(h.b)
                            .ok()
                            .zip(usize::try_from(len).ok())
                            .is_some_and(|(off, l)| r.check_range(off, l).is_ok());
                        if !fits {
                            break Err(ReceiveFailure::WriteOutOfRange {
                                len,
                                offset: h.b,
                                region: r.id(),
                                region_len: r.len(),
                            });
                        }
                    } else if len > 1 << 40 {
                        break Err(ReceiveFailure::WriteTooLarge { len });
                    }
                    if let Err(e) = apply_payload(&mut reader, &mut chunk, region.as_deref(), h) {
                        break Err(ReceiveFailure::Receive(e));
                    }
                    applied += 1;
                    match &region {
                        Some(r) => {
                            if h.flags & wire::FLAG_IMM != 0 {
                                let n = Notification {
                                    from: self.state.peer(),
                                    imm: h.word,
                                    len: len as usize,
                                };
                                let me = &self;
                                let f = &fabric;
                                if !r.push_notification(n, &|| {
                                    me.state.is_failed() || f.hub.is_shut_down()
                                }) {
                                    break Ok(());
                                }
                            }
                            r.ring();
                        }
                        None => tracing::debug!(
                            peer = self.state.peer(),
                            key = h.a,
                            "discarded a write to an unregistered region"
                        ),
                    }
                    if h.flags & wire::FLAG_SIGNALED != 0 {
                        self.queue_ack(applied);
                    }
                }
                kind::ACK => {
                    self.state.applied(h.b);
                }
                kind::QUERY => {
                    let answer = fabric.region_by_id(RegionId(h.a));
                    let frame = match answer {
                        Some(r) => Header {
                            kind: kind::ANSWER,
                            flags: wire::FLAG_FOUND,
                            word: h.word,
                            a: r.key(),
                            b: h.a,
                            c: r.len() as u64,
                        },
                        None => Header {
                            kind: kind::ANSWER,
                            flags: 0,
                            word: h.word,
                            a: 0,
                            b: h.a,
                            c: 0,
                        },
                    };
                    self.queue_frame(frame.encode());
                }
                kind::ANSWER => {
                    let found = (h.flags & wire::FLAG_FOUND != 0).then(|| RemoteRegion {
                        owner: self.state.peer(),
                        id: RegionId(h.b),
                        len: h.c as usize,
                        key: h.a,
                        addr: 0,
                    });
                    self.queries.answer(h.word, found);
                }
                kind::GOODBYE => break Err(ReceiveFailure::Goodbye),
                other => break Err(ReceiveFailure::UnknownFrameKind(other)),
            }
        };
        if let Err(reason) = outcome {
            self.fail_with(reason.to_string(), true);
        }
    }

    fn query_once(
        &self,
        id: RegionId,
        deadline: Instant,
    ) -> Result<Option<RemoteRegion>, FabricError> {
        let answer = self.queries.ask(&self.state, deadline, |qid| {
            let frame = Header {
                kind: kind::QUERY,
                flags: 0,
                word: qid,
                a: id.0,
                b: 0,
                c: 0,
            }
            .encode();
            let mut s = lock(&self.send);
            if let Err(e) = s.stream.write_all(&frame) {
                drop(s);
                self.fail_with(format!("send failed: {e}"), true);
                return Err(self.link_failed_error());
            }
            if let Err(e) = self.drain_outbox(&mut s) {
                // The query went out, but the queued control frames did not, and the link is
                // not failed here (unlike in `kick`).
                tracing::warn!(peer = self.state.peer(), error = %e, "queued frames not sent");
            }
            drop(s);
            self.kick();
            Ok(())
        })?;
        Ok(answer.flatten())
    }
}

fn send_write(
    s: &mut Sender,
    header: &[u8; HEADER_LEN],
    req: &WriteRequest<'_>,
) -> std::io::Result<()> {
    let total = HEADER_LEN + req.len;
    // The staging buffer only grows, so no write costs a clearing; its bytes are rewritten
    // (and, on a sealed link, encrypted in place) for every write.
    let room = if req.len <= CHUNK { total } else { CHUNK };
    if s.staging.len() < room {
        s.staging.resize(room, 0);
    }
    if req.len <= CHUNK {
        s.staging[..HEADER_LEN].copy_from_slice(header);
        read_src(req.src, req.src_offset, &mut s.staging[HEADER_LEN..total])?;
        return s.stream.write_all_in_place(&mut s.staging[..total]);
    }
    s.stream.write_all(header)?;
    let mut done = 0;
    while done < req.len {
        let n = (req.len - done).min(CHUNK);
        read_src(req.src, req.src_offset + done, &mut s.staging[..n])?;
        s.stream.write_all_in_place(&mut s.staging[..n])?;
        done += n;
    }
    Ok(())
}

fn read_src(src: &Region, off: usize, dst: &mut [u8]) -> std::io::Result<()> {
    src.read(off, dst)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))
}

/// Reads a write's payload from the socket and applies it chunk by chunk (or skips it when the
/// region is gone).
fn apply_payload(
    reader: &mut BufReader<ReadHalf>,
    chunk: &mut Vec<u8>,
    region: Option<&Region>,
    h: Header,
) -> std::io::Result<()> {
    let len = h.c as usize;
    let base = h.b as usize;
    let mut done = 0;
    while done < len {
        let n = (len - done).min(CHUNK);
        chunk.resize(n, 0);
        reader.read_exact(&mut chunk[..n])?;
        if let Some(r) = region {
            r.write(base + done, &chunk[..n])
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
        }
        done += n;
    }
    Ok(())
}

impl SideLink for TcpLink {
    const NAME: &'static str = "TcpLink";

    fn state(&self) -> &Arc<LinkState> {
        &self.state
    }

    /// Marks the link failed; `report` says whether subscribers hear of it.
    fn fail_with(&self, reason: String, report: bool) {
        self.state.fail(&reason, report, || self.queries.wake());
    }

    /// Sends a graceful goodbye (best effort) before a local shutdown.
    fn say_goodbye(&self) {
        if self.state.is_failed() {
            return;
        }
        let frame = Header {
            kind: kind::GOODBYE,
            flags: 0,
            word: 0,
            a: 0,
            b: 0,
            c: 0,
        }
        .encode();
        if let Ok(mut s) = self.send.try_lock() {
            // The peer may have gone already; it sees the link close either way.
            let _ = s.stream.write_all(&frame);
        }
    }

    fn remote_region(&self, id: RegionId, timeout: Duration) -> Result<RemoteRegion, FabricError> {
        let ask = |deadline| self.query_once(id, deadline);
        self.state.remote_region(id, timeout, |_| true, ask, Ok)
    }

    fn post_write(&self, req: &WriteRequest<'_>, signaled: bool) -> Result<u64, FabricError> {
        self.post(req, signaled)
    }
}
