//! State transfer: how a member new to a shard gets the replica state of the shard during a
//! view change, before it delivers anything in the new view.
//!
//! The view names each transfer ([`super::view::Transfer`]): one member that held the shard in
//! the previous view sends, over TCP to the receiver's `state_transfer_port`, a header (magic
//! `DRST`, version, view id, subgroup) and then the state as a sequence of chunks, each a
//! little-endian `u32` length and that many bytes, ended by an empty chunk. The sender
//! serializes straight into the socket and the receiver deserializes straight from it through
//! [`StateHooks`], so a state of hundreds of MiB never sits in memory twice. Chunks are at most
//! [`MAX_CHUNK`] bytes; anything else on the port is rejected with a logged error.

use std::io::{self, BufWriter, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use crate::NodeId;

/// First bytes of a state transfer.
pub const MAGIC: [u8; 4] = *b"DRST";
/// Version of the transfer format.
pub const VERSION: u32 = 1;
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
        let len = u32::from_le_bytes(len) as usize;
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
/// Connecting is retried until `timeout` (the receiver may still be setting up).
pub fn send(
    to: SocketAddr,
    vid: u64,
    subgroup: usize,
    hooks: Option<&dyn StateHooks>,
    timeout: Duration,
) -> Result<(), TransferError> {
    let deadline = Instant::now() + timeout;
    let stream = loop {
        match TcpStream::connect_timeout(&to, Duration::from_secs(1)) {
            Ok(s) => break s,
            Err(e) if Instant::now() >= deadline => {
                return Err(io_err(format!("connecting to {to}"))(e));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    };
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
        h.save_state(subgroup, &mut chunks)
            .map_err(io_err(format!("writing subgroup {subgroup} to {to}")))?;
    }
    chunks
        .finish()
        .map_err(io_err(format!("finishing the transfer to {to}")))
}

/// Receives `expected` states for view `vid` on `listener` and loads each through `hooks`,
/// within `timeout`. Connections that are not a transfer for this view are logged and closed.
pub fn receive(
    listener: &TcpListener,
    me: NodeId,
    vid: u64,
    mut expected: Vec<usize>,
    hooks: Option<&dyn StateHooks>,
    timeout: Duration,
) -> Result<(), TransferError> {
    if expected.is_empty() {
        return Ok(());
    }
    let deadline = Instant::now() + timeout;
    listener
        .set_nonblocking(true)
        .map_err(io_err("configuring the listener"))?;
    while !expected.is_empty() {
        let now = Instant::now();
        if now >= deadline {
            return Err(TransferError::Timeout {
                missing: expected.len(),
                after: timeout,
            });
        }
        let (stream, from) = match listener.accept() {
            Ok(x) => x,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(e) => return Err(io_err("accepting")(e)),
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some((deadline - now).max(Duration::from_millis(100))));
        match receive_one(stream, vid, &expected, hooks) {
            Ok(subgroup) => {
                expected.retain(|&s| s != subgroup);
                tracing::info!(node = me, vid, subgroup, %from, "received replica state");
            }
            Err(e) => tracing::warn!(%from, error = %e, "rejected a state transfer connection"),
        }
    }
    Ok(())
}

fn receive_one(
    mut stream: TcpStream,
    vid: u64,
    expected: &[usize],
    hooks: Option<&dyn StateHooks>,
) -> io::Result<usize> {
    let mut header = [0u8; 20];
    stream.read_exact(&mut header)?;
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidData, what);
    if header[..4] != MAGIC {
        return Err(bad(format!(
            "not a state transfer (first bytes {:02x?})",
            &header[..4]
        )));
    }
    let word = |at: usize| {
        let mut b = [0u8; 4];
        b.copy_from_slice(&header[at..at + 4]);
        u32::from_le_bytes(b)
    };
    if word(4) != VERSION {
        return Err(bad(format!("transfer format version {}", word(4))));
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&header[8..16]);
    let got_vid = u64::from_le_bytes(v);
    let subgroup = word(16) as usize;
    if got_vid != vid || !expected.contains(&subgroup) {
        return Err(bad(format!(
            "unexpected transfer (view {got_vid}, subgroup {subgroup})"
        )));
    }
    let mut chunks = ChunkReader {
        input: io::BufReader::with_capacity(256 << 10, stream),
        left: 0,
        ended: false,
    };
    if let Some(h) = hooks {
        h.load_state(subgroup, &mut chunks)?;
    }
    chunks.drain()?;
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
            send(addr, 7, 3, Some(&src), Duration::from_secs(5))
        });
        let dst = Blob(Mutex::new(Vec::new()));
        receive(
            &listener,
            1,
            7,
            vec![3],
            Some(&dst),
            Duration::from_secs(10),
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
        let sender =
            std::thread::spawn(move || send(addr, 2, 0, Some(&src), Duration::from_secs(60)));
        let dst = Stream {
            blocks,
            seen: Mutex::new(0),
        };
        receive(
            &listener,
            1,
            2,
            vec![0],
            Some(&dst),
            Duration::from_secs(120),
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
        let err = receive(&listener, 1, 1, vec![0], None, Duration::from_millis(200));
        assert!(matches!(
            err,
            Err(TransferError::Timeout { missing: 1, .. })
        ));
    }
}
