//! State transfer: how a member new to a shard gets the replica state of the shard during a
//! view change, before it delivers anything in the new view.
//!
//! The view names each transfer ([`super::view::Transfer`]): one member that held the shard in
//! the previous view sends, over TCP to the receiver's `state_transfer_port`, a header (magic
//! `DRST`, version, view id, subgroup) and then the state as a sequence of chunks, each a
//! little-endian `u32` length and that many bytes, ended by an empty chunk. The sender
//! serializes straight into the socket and the receiver deserializes straight from it through
//! [`StateHooks`], so a state of hundreds of MiB never sits in memory twice. Chunks are at most
//! [`MAX_CHUNK`] bytes; anything else on the port is rejected with a logged error. A sender that
//! cannot produce its state ends the stream with [`ABORT_CHUNK`] and a reason, so the receiver
//! fails at once instead of waiting for its bound; so does a stream cut after its header.
//!
//! Both ends take a `give_up` check, called while they wait: the view manager stops a transfer
//! whose other end has failed (its row is frozen) instead of waiting out the bound.

use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::auth::Auth;
use crate::NodeId;
use derecho_fabric::secure::{Role, Stream};

/// First bytes of a state transfer.
pub const MAGIC: [u8; 4] = *b"DRST";
/// Version of the transfer format (2 added [`ABORT_CHUNK`]).
pub const VERSION: u32 = 2;
/// A chunk length that is no length: the sender could not produce the state; a `u32` length
/// and that many bytes of UTF-8 reason follow (at most [`MAX_REASON`]).
pub const ABORT_CHUNK: u32 = u32::MAX;
/// Longest abort reason a receiver reads.
pub const MAX_REASON: usize = 4096;
/// Largest chunk a sender writes and a receiver accepts.
pub const MAX_CHUNK: usize = 1 << 20;

/// What a node's replicated objects provide for state transfer. Both calls run on the view
/// manager's thread while no message of the shard is being delivered.
pub trait StateHooks: Send + Sync {
    /// Writes this member's replica of `subgroup` to `out`.
    fn save_state(&self, subgroup: usize, out: &mut dyn Write) -> io::Result<()>;
    /// Replaces this member's replica of `subgroup` with the state read from `input`.
    fn load_state(&self, subgroup: usize, input: &mut dyn Read) -> io::Result<()>;
}

/// Errors of a state transfer.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// A socket operation failed.
    #[error("state transfer {context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The transfer of `subgroup` began but did not finish: the sender aborted it or the
    /// stream broke. The sender does not try again in this view.
    #[error("state transfer of subgroup {subgroup} from {from} failed: {reason}")]
    Failed {
        /// The subgroup.
        subgroup: usize,
        /// The sender's address.
        from: SocketAddr,
        /// What went wrong.
        reason: String,
    },
    /// The caller's `give_up` check ended the transfer (its other end failed).
    #[error("state transfer abandoned: {0}")]
    Abandoned(String),
    /// Not every expected state arrived in time.
    #[error("state transfer: {missing} of the expected states did not arrive within {after:?}")]
    Timeout {
        /// How many are missing.
        missing: usize,
        /// The bound.
        after: Duration,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> TransferError {
    let context = context.into();
    move |source| TransferError::Io { context, source }
}

/// Writes chunks to the socket.
struct ChunkWriter<W: Write> {
    out: W,
    buf: Vec<u8>,
}

impl<W: Write> ChunkWriter<W> {
    fn flush_chunk(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // The buffer never grows past MAX_CHUNK, which fits in a u32.
        self.out.write_all(&(self.buf.len() as u32).to_le_bytes())?;
        self.out.write_all(&self.buf)?;
        self.buf.clear();
        Ok(())
    }

    fn finish(mut self) -> io::Result<()> {
        self.flush_chunk()?;
        self.out.write_all(&0u32.to_le_bytes())?;
        self.out.flush()
    }

    /// Ends the stream with [`ABORT_CHUNK`] and `reason` instead of the state's end. What was
    /// buffered is dropped: the receiver discards the whole transfer.
    fn abort(mut self, reason: &str) -> io::Result<()> {
        let reason = &reason.as_bytes()[..reason.len().min(MAX_REASON)];
        self.out.write_all(&ABORT_CHUNK.to_le_bytes())?;
        // At most MAX_REASON bytes, which fits in a u32.
        self.out.write_all(&(reason.len() as u32).to_le_bytes())?;
        self.out.write_all(reason)?;
        self.out.flush()
    }
}

impl<W: Write> Write for ChunkWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = MAX_CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_CHUNK {
            self.flush_chunk()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_chunk()?;
        self.out.flush()
    }
}

/// Reads chunks from the socket as one byte stream.
struct ChunkReader<R: Read> {
    input: R,
    left: usize,
    ended: bool,
}

impl<R: Read> ChunkReader<R> {
    fn next_chunk(&mut self) -> io::Result<()> {
        let mut len = [0u8; 4];
        self.input.read_exact(&mut len)?;
        let len = u32::from_le_bytes(len);
        if len == ABORT_CHUNK {
            let mut n = [0u8; 4];
            self.input.read_exact(&mut n)?;
            let n = (u32::from_le_bytes(n) as usize).min(MAX_REASON);
            let mut reason = vec![0u8; n];
            self.input.read_exact(&mut reason)?;
            return Err(io::Error::other(format!(
                "the sender aborted: {}",
                String::from_utf8_lossy(&reason)
            )));
        }
        let len = len as usize;
        if len > MAX_CHUNK {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("a state chunk of {len} bytes exceeds the {MAX_CHUNK}-byte limit"),
            ));
        }
        self.left = len;
        self.ended = len == 0;
        Ok(())
    }

    /// Reads whatever the loader left unread, up to the end marker.
    fn drain(&mut self) -> io::Result<()> {
        let mut sink = [0u8; 8192];
        while self.read(&mut sink)? > 0 {}
        Ok(())
    }
}

impl<R: Read> Read for ChunkReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.left == 0 {
            if self.ended {
                return Ok(0);
            }
            self.next_chunk()?;
        }
        let n = out.len().min(self.left);
        let got = self.input.read(&mut out[..n])?;
        if got == 0 && n > 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.left -= got;
        Ok(got)
    }
}

/// Sends this member's replica of `subgroup` to the member listening at `to`, for view `vid`.
/// Connecting is retried until `timeout` (the receiver may still be setting up) or until
/// `give_up` returns a reason. If the state cannot be produced, the receiver is told why.
pub(crate) fn send(
    auth: &Auth,
    (to_id, to): (NodeId, SocketAddr),
    vid: u64,
    subgroup: usize,
    hooks: Option<&dyn StateHooks>,
    timeout: Duration,
    give_up: &dyn Fn() -> Option<String>,
) -> Result<(), TransferError> {
    let deadline = Instant::now() + timeout;
    let tcp = loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(io_err(format!("connecting to {to}"))(e));
            }
            Err(_) => {
                if let Some(why) = give_up() {
                    return Err(TransferError::Abandoned(why));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    };
    let stream = auth
        .wrap_dialed(tcp, Role::StateTransfer, Some(to_id))
        .map_err(io_err(format!("authenticating with {to}")))?;
    // Socket options fail only on a closed socket, which the first write reports.
    let _ = stream.set_nodelay(true);
    let _ = stream.set_write_timeout(Some(timeout));
    let mut out = BufWriter::with_capacity(256 << 10, stream);
    let mut header = Vec::with_capacity(20);
    header.extend_from_slice(&MAGIC);
    header.extend_from_slice(&VERSION.to_le_bytes());
    header.extend_from_slice(&vid.to_le_bytes());
    header.extend_from_slice(&(subgroup as u32).to_le_bytes());
    out.write_all(&header)
        .map_err(io_err(format!("sending to {to}")))?;
    let mut chunks = ChunkWriter {
        out,
        buf: Vec::with_capacity(64 << 10),
    };
    if let Some(h) = hooks {
        if let Err(e) = h.save_state(subgroup, &mut chunks) {
            let reason = format!("subgroup {subgroup}: {e}");
            // The receiver learns why; if even that fails, the broken stream tells it.
            if let Err(told) = chunks.abort(&reason) {
                tracing::debug!(%to, error = %told, "could not tell the receiver the transfer failed");
            }
            return Err(io_err(format!("writing subgroup {subgroup} to {to}"))(e));
        }
    }
    chunks
        .finish()
        .map_err(io_err(format!("finishing the transfer to {to}")))
}

/// Receives `expected` states for view `vid` on `listener` and loads each through `hooks`,
/// within `timeout`, checking `give_up` while it waits. Connections that are not a transfer for
/// this view are logged and closed; a transfer for this view that fails after its header fails
/// the whole receive at once (its sender does not send again). Each connection is
/// authenticated and its header read on a thread of its own (at most [`MAX_OPENING`] at once),
/// so a silent or slow stranger never delays the senders.
pub(crate) fn receive(
    auth: &Auth,
    listener: &TcpListener,
    vid: u64,
    mut expected: Vec<usize>,
    hooks: Option<&dyn StateHooks>,
    timeout: Duration,
    give_up: &dyn Fn() -> Option<String>,
) -> Result<(), TransferError> {
    if expected.is_empty() {
        return Ok(());
    }
    let me = auth.me();
    let deadline = Instant::now() + timeout;
    listener
        .set_nonblocking(true)
        .map_err(io_err("configuring the listener"))?;
    let (opened_tx, opened) = std::sync::mpsc::channel();
    let opening = derecho_fabric::sync::Gate::new(MAX_OPENING, MAX_OPENING / 2);
    while !expected.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            return Err(TransferError::Timeout {
                missing: expected.len(),
                after: timeout,
            });
        }
        match listener.accept() {
            Ok((tcp, from)) => {
                open_in_background(auth, tcp, from, deadline, &opening, &opened_tx);
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(io_err("accepting")(e)),
        }
        // Waits a millisecond at most: an opened connection is taken the moment its header is
        // in, and the (non-blocking) listener is polled again soon after. This loop runs only
        // while a transfer is due.
        let Ok((stream, header, from)) = opened.recv_timeout(Duration::from_millis(1)) else {
            if let Some(why) = give_up() {
                return Err(TransferError::Abandoned(why));
            }
            continue;
        };
        match check_header(&header, vid, &expected).and_then(|s| load(stream, s, hooks)) {
            Ok(subgroup) => {
                expected.retain(|&s| s != subgroup);
                tracing::info!(node = me, vid, subgroup, %from, "received replica state");
            }
            Err(Refused(e)) => {
                tracing::warn!(%from, error = %e, "rejected a state transfer connection")
            }
            Err(Broke { subgroup, error }) => {
                return Err(TransferError::Failed {
                    subgroup,
                    from,
                    reason: error.to_string(),
                })
            }
        }
    }
    Ok(())
}

/// Why one connection did not deliver a state.
enum OneFailed {
    /// It was not a transfer this receiver expects (garbage, a stale view): keep waiting.
    Refused(io::Error),
    /// The transfer of `subgroup` began and failed.
    Broke { subgroup: usize, error: io::Error },
}
use OneFailed::{Broke, Refused};

/// Reads one transfer (header, then chunks up to the end marker) from `input`, as `receive`
/// does for each connection, and loads the state through `hooks`: the subgroup it carried, or
/// why the stream was refused or broke. For tests that drive the decoder without a socket (the
/// `testing` feature).
#[cfg(feature = "testing")]
pub fn read_one<R: Read>(
    input: R,
    vid: u64,
    expected: &[usize],
    hooks: Option<&dyn StateHooks>,
) -> io::Result<usize> {
    let mut input = input;
    let mut header = [0u8; HEADER_LEN];
    input.read_exact(&mut header)?;
    check_header(&header, vid, expected)
        .and_then(|subgroup| load(input, subgroup, hooks))
        .map_err(|e| match e {
            Refused(error) | Broke { error, .. } => error,
        })
}

/// Most connections to the state-transfer port authenticated and read at once.
pub const MAX_OPENING: usize = 32;

/// The opening of a connection: its stream after the handshake, and the transfer header.
type Opened = (Stream, [u8; HEADER_LEN], SocketAddr);

/// Authenticates `tcp` and reads its header on a thread of its own, then hands both to the
/// receiving loop through `done`; logs and drops the connection if that fails, or if
/// [`MAX_OPENING`] connections are being opened already.
fn open_in_background(
    auth: &Auth,
    tcp: TcpStream,
    from: SocketAddr,
    deadline: Instant,
    opening: &Arc<derecho_fabric::sync::Gate>,
    done: &std::sync::mpsc::Sender<Opened>,
) {
    let (auth, done) = (auth.clone(), done.clone());
    let started = opening.spawn(Some(from.ip()), "transfer-open", move || {
        let opened = (|| {
            // Socket options fail only on a closed socket, which the handshake reports.
            let _ = tcp.set_nonblocking(false);
            let (mut stream, _) = auth
                .accept(tcp, Role::StateTransfer)
                .map_err(crate::auth::into_io)?;
            let left = deadline.saturating_duration_since(Instant::now());
            stream.set_read_timeout(Some(left.max(Duration::from_millis(100))))?;
            let mut header = [0u8; HEADER_LEN];
            stream.read_exact(&mut header)?;
            Ok::<_, io::Error>((stream, header, from))
        })();
        match opened {
            // The receiver may have finished meanwhile; the connection then just closes.
            Ok(o) => drop(done.send(o)),
            Err(e) => tracing::warn!(%from, error = %e, "refused a state transfer connection"),
        }
    });
    if let Err(e) = started {
        tracing::warn!(%from, "closed a state transfer connection: {e}");
    }
}

/// Length of a transfer's header: magic, format version, view id, subgroup.
const HEADER_LEN: usize = 20;

/// The subgroup a transfer header announces, if it is one this receiver expects.
fn check_header(
    header: &[u8; HEADER_LEN],
    vid: u64,
    expected: &[usize],
) -> Result<usize, OneFailed> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if header[..4] != MAGIC {
        return Err(Refused(bad(format!(
            "not a state transfer (first bytes {:02x?})",
            &header[..4]
        ))));
    }
    let word = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&header[at..at + 4]);
        u32::from_le_bytes(b)
    };
    if word(4) != VERSION {
        return Err(Refused(bad(format!("transfer format version {}", word(4)))));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&header[8..16]);
    let got_vid = u64::from_le_bytes(v);
    let subgroup = word(16) as usize;
    if got_vid != vid || !expected.contains(&subgroup) {
        return Err(Refused(bad(format!(
            "unexpected transfer (view {got_vid}, subgroup {subgroup})"
        ))));
    }
    Ok(subgroup)
}

/// Reads the chunks of `subgroup`'s state after its header and loads them through `hooks`.
fn load<R: Read>(
    stream: R,
    subgroup: usize,
    hooks: Option<&dyn StateHooks>,
) -> Result<usize, OneFailed> {
    let broke = |error| Broke { subgroup, error };
    let mut chunks = ChunkReader {
        input: io::BufReader::with_capacity(256 << 10, stream),
        left: 0,
        ended: false,
    };
    if let Some(h) = hooks {
        h.load_state(subgroup, &mut chunks).map_err(broke)?;
    }
    chunks.drain().map_err(broke)?;
    Ok(subgroup)
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Blob(Mutex<Vec<u8>>);

    impl StateHooks for Blob {
        fn save_state(&self, _: usize, out: &mut dyn Write) -> io::Result<()> {
            out.write_all(&self.0.lock().map_err(|_| io::ErrorKind::Other)?)
        }
        fn load_state(&self, _: usize, input: &mut dyn Read) -> io::Result<()> {
            let mut v = Vec::new();
            input.read_to_end(&mut v)?;
            *self.0.lock().map_err(|_| io::ErrorKind::Other)? = v;
            Ok(())
        }
    }

    #[test]
    fn a_state_larger_than_a_chunk_arrives_whole_and_garbage_is_ignored() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let data: Vec<u8> = (0..(3 * MAX_CHUNK + 17)).map(|i| (i * 7) as u8).collect();
        let src = Blob(Mutex::new(data.clone()));
        let garbage = std::thread::spawn(move || {
            let mut s = TcpStream::connect(addr).expect("connect");
            let _ = s.write_all(b"GET / HTTP/1.1\r\n\r\n");
        });
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            send(
                &Auth::open(1),
                (2, addr),
                7,
                3,
                Some(&src),
                Duration::from_secs(5),
                &|| None,
            )
        });
        let dst = Blob(Mutex::new(Vec::new()));
        receive(
            &Auth::open(1),
            &listener,
            7,
            vec![3],
            Some(&dst),
            Duration::from_secs(10),
            &|| None,
        )
        .expect("receive");
        sender.join().expect("thread").expect("send");
        garbage.join().expect("thread");
        assert_eq!(*dst.0.lock().expect("lock"), data);
    }

    /// Writes `blocks` blocks of 64 KiB made on the fly; reads them back checking each
    /// block's number, without keeping them.
    struct Stream {
        blocks: u64,
        seen: Mutex<u64>,
    }

    const BLOCK: usize = 64 << 10;

    impl StateHooks for Stream {
        fn save_state(&self, _: usize, out: &mut dyn Write) -> io::Result<()> {
            let mut block = vec![0xa5u8; BLOCK];
            for i in 0..self.blocks {
                block[..8].copy_from_slice(&i.to_le_bytes());
                out.write_all(&block)?;
            }
            Ok(())
        }
        fn load_state(&self, _: usize, input: &mut dyn Read) -> io::Result<()> {
            let mut block = vec![0u8; BLOCK];
            let mut i = 0u64;
            loop {
                match input.read_exact(&mut block) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                    Err(e) => return Err(e),
                }
                let mut n = [0u8; 8];
                n.copy_from_slice(&block[..8]);
                if u64::from_le_bytes(n) != i || block[BLOCK - 1] != 0xa5 {
                    return Err(io::Error::other(format!("block {i} arrived damaged")));
                }
                i += 1;
            }
            *self.seen.lock().map_err(|_| io::ErrorKind::Other)? = i;
            Ok(())
        }
    }

    /// Peak resident memory of this process, in KiB.
    fn peak_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmHWM:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            })
            .unwrap_or(0)
    }

    #[test]
    fn a_state_of_hundreds_of_mib_streams_without_being_held_in_memory() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let blocks = (256u64 << 20) / BLOCK as u64;
        let before = peak_kib();
        let src = Stream {
            blocks,
            seen: Mutex::new(0),
        };
        let sender = std::thread::spawn(move || {
            send(
                &Auth::open(1),
                (2, addr),
                2,
                0,
                Some(&src),
                Duration::from_secs(60),
                &|| None,
            )
        });
        let dst = Stream {
            blocks,
            seen: Mutex::new(0),
        };
        receive(
            &Auth::open(1),
            &listener,
            2,
            vec![0],
            Some(&dst),
            Duration::from_secs(120),
            &|| None,
        )
        .expect("receive");
        sender.join().expect("thread").expect("send");
        assert_eq!(*dst.seen.lock().expect("lock"), blocks);
        // 256 MiB went through; the peak grew by the buffers only (other tests of this binary
        // run alongside, hence the margin).
        let grown_mib = peak_kib().saturating_sub(before) / 1024;
        assert!(grown_mib < 96, "peak memory grew by {grown_mib} MiB");
    }

    #[test]
    fn a_missing_state_times_out() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let err = receive(
            &Auth::open(1),
            &listener,
            1,
            vec![0],
            None,
            Duration::from_millis(200),
            &|| None,
        );
        assert!(matches!(
            err,
            Err(TransferError::Timeout { missing: 1, .. })
        ));
    }

    /// A sender without the state it should send.
    struct NoReplica;

    impl StateHooks for NoReplica {
        fn save_state(&self, subgroup: usize, _: &mut dyn Write) -> io::Result<()> {
            Err(io::Error::other(format!(
                "no replica of subgroup {subgroup}"
            )))
        }
        fn load_state(&self, _: usize, _: &mut dyn Read) -> io::Result<()> {
            Err(io::Error::other("not a receiver"))
        }
    }

    /// Issue #14: a sender that holds no replica made the receiver wait out its whole bound
    /// (120 s by default); now the receiver fails at once with the sender's reason.
    #[test]
    fn a_sender_without_the_state_fails_the_receiver_at_once() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sender = std::thread::spawn(move || {
            send(
                &Auth::open(1),
                (2, addr),
                4,
                1,
                Some(&NoReplica),
                Duration::from_secs(5),
                &|| None,
            )
        });
        let dst = Blob(Mutex::new(Vec::new()));
        let err = receive(
            &Auth::open(1),
            &listener,
            4,
            vec![1],
            Some(&dst),
            Duration::from_secs(60),
            &|| None,
        );
        match err {
            Err(TransferError::Failed {
                subgroup: 1,
                reason,
                ..
            }) => assert!(reason.contains("no replica of subgroup 1"), "{reason}"),
            other => panic!("expected Failed, got {other:?}"),
        }
        assert!(sender.join().expect("thread").is_err());
    }

    /// A connection that opens and then says nothing does not hold the receiver: the sender
    /// that comes after it is read at once (the silent one used to be read first, until the
    /// receive's own deadline passed).
    #[test]
    fn a_silent_connection_does_not_hold_up_the_transfer_behind_it() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let silent = TcpStream::connect(addr).expect("connect");
        let src = Blob(Mutex::new(vec![5; 1000]));
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            send(
                &Auth::open(1),
                (2, addr),
                4,
                0,
                Some(&src),
                Duration::from_secs(20),
                &|| None,
            )
        });
        let dst = Blob(Mutex::new(Vec::new()));
        let got = receive(
            &Auth::open(2),
            &listener,
            4,
            vec![0],
            Some(&dst),
            Duration::from_secs(3),
            &|| None,
        );
        assert!(got.is_ok(), "{got:?}");
        assert_eq!(dst.0.lock().expect("lock").len(), 1000);
        sender.join().expect("sender").expect("send");
        drop(silent);
    }

    /// A receiver stops waiting when its check says the sender has failed.
    #[test]
    fn a_receiver_gives_up_when_told_the_sender_failed() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let asked = std::sync::atomic::AtomicU32::new(0);
        let give_up = || {
            let n = asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            (n >= 3).then(|| "node 9 failed".to_string())
        };
        let err = receive(
            &Auth::open(1),
            &listener,
            1,
            vec![0],
            None,
            Duration::from_secs(60),
            &give_up,
        );
        match err {
            Err(TransferError::Abandoned(why)) => assert_eq!(why, "node 9 failed"),
            other => panic!("expected Abandoned, got {other:?}"),
        }
    }
}
