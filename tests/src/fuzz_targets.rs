//! The checks of one input for every decoder of the library that reads bytes from outside the
//! process, with the valid inputs their mutations start from.
//!
//! Each check feeds the input to the decoder the way the library does and returns; the decoder
//! may refuse the input, but must not panic. The same functions run in two places: the seeded
//! mutation tests of the normal suite (`tests/fuzz_decoders.rs` and `tests/fuzz_storage.rs`,
//! through [`crate::fuzz::run`]) and the cargo-fuzz targets of the repository's `fuzz/`
//! directory, so a finding of either is a finding of both.
//!
//! The frame decoders of the fabric are checked by [`derecho_fabric::fuzz_targets`].

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use derecho::config::Config;
use derecho::gms::transfer::{self, StateHooks, ABORT_CHUNK, MAGIC, VERSION};
use derecho::gms::wire::{read_msg, write_msg};
use derecho::gms::{GmsMessage, MemberInfo, Refusal, View};
use derecho::layout::LayoutPolicy;
use derecho::persist::{Hlc, Log, LogOptions, SimOp, SimStorage, Storage, INVALID};
use derecho::rpc::wire::{self, Kind};
use derecho::rpc::RemoteError;

/// A member on the loopback address with the default ports, for messages of the corpora.
fn member(id: u32) -> MemberInfo {
    MemberInfo {
        id,
        ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
        gms_port: 23580,
        fabric_port: 37683,
        state_transfer_port: 28366,
        external_port: 32645,
    }
}

/// One framed message of every kind the membership service exchanges: a join, a redirect, a
/// refusal, a proposed view with its acknowledgement and commit, a probe and its answer.
pub fn gms_corpus() -> Vec<Vec<u8>> {
    let view = View {
        vid: 3,
        members: vec![member(0), member(1)],
        joined: vec![1],
        ..View::default()
    };
    let messages = [
        GmsMessage::Join {
            version: derecho::gms::PROTOCOL_VERSION,
            member: member(4),
        },
        GmsMessage::Redirect {
            leader: 0,
            addr: member(0).gms_addr(),
            members: vec![member(1).gms_addr()],
        },
        GmsMessage::Refused(Refusal::NotNow("later".into())),
        GmsMessage::Prepare(view),
        GmsMessage::Ack { vid: 3 },
        GmsMessage::Commit { vid: 3 },
        GmsMessage::Probe,
        GmsMessage::Running {
            vid: 3,
            leader: member(0).gms_addr(),
        },
    ];
    messages
        .iter()
        .filter_map(|m| {
            let mut b = Vec::new();
            write_msg(&mut b, m).ok().map(|()| b)
        })
        .collect()
}

/// Checks one input of the membership service's connections: read as one framed message.
pub fn gms_message(data: &[u8]) {
    let _ = read_msg(&mut &data[..]);
}

/// RPC connections as they start (the hello, then a frame of each kind the peers exchange),
/// and the header of an ordered call in front of its body.
pub fn rpc_corpus() -> Vec<Vec<u8>> {
    let mut corpus = Vec::new();
    for (kind, parts) in [
        (Kind::Query, vec![&[1u8, 0, 0, 0][..], b"query"]),
        (Kind::Reply, vec![&[0u8][..], b"reply"]),
        (Kind::OrderedReply, vec![&[2u8, 0, 0, 0, 1][..], b"no"]),
        (Kind::Relay, vec![&[0u8, 0, 0, 0][..], b"update"]),
        (Kind::GetView, vec![]),
    ] {
        let mut b = Vec::new();
        if wire::write_hello(&mut b).is_ok() && wire::write_frame(&mut b, kind, 77, &parts).is_ok()
        {
            corpus.push(b);
        }
    }
    let mut ordered = wire::ordered_header(wire::Ordered {
        id: 5,
        caller: 2,
        stamp_us: 9,
    })
    .to_vec();
    ordered.extend_from_slice(b"body");
    corpus.push(ordered);
    corpus
}

/// Checks one input of the RPC layer: read as a connection (the hello, then one frame of at
/// most 64 KiB whose body is read as a subgroup number and as an answer's status), as the
/// payload of an ordered call, and as a bincode-encoded argument tuple.
pub fn rpc_frame(data: &[u8]) {
    let mut input = data;
    if wire::read_hello(&mut input).is_ok() {
        if let Ok(f) = wire::read_frame(&mut input, 64 << 10) {
            let _ = wire::take_u32(&f.body);
            let _ = wire::parse_status(&f.body);
        }
    }
    let _ = wire::parse_ordered(data);
    let _ = wire::decode::<(u64, String, Vec<u8>)>(data);
}

/// Every answer a peer-to-peer reply can carry: replies, and each kind of refusal.
pub fn p2p_answers() -> Vec<wire::Answer> {
    vec![
        Ok(b"reply".to_vec()),
        Ok(Vec::new()),
        Err(RemoteError::NoReplica {
            node: 3,
            subgroup: 1,
        }),
        Err(RemoteError::Malformed {
            reason: "unexpected end of input".into(),
        }),
        Err(RemoteError::ReplyTooLarge {
            len: 1 << 20,
            max: 1 << 16,
        }),
        Err(RemoteError::Encode {
            reason: "sequence too long".into(),
        }),
        Err(RemoteError::ShuttingDown),
        Err(RemoteError::Removed { node: 2 }),
        Err(RemoteError::Relay {
            reason: "the shard is wedged".into(),
            transient: true,
        }),
    ]
}

/// The body of a reply for each of [`p2p_answers`]: its status byte, then the reply or the
/// encoded refusal.
pub fn p2p_status_corpus() -> Vec<Vec<u8>> {
    p2p_answers()
        .iter()
        .map(|a| {
            let (status, body) = wire::status_parts(a);
            let mut b = status.to_vec();
            b.extend_from_slice(&body);
            b
        })
        .collect()
}

/// Checks one input of a peer-to-peer reply's body: read as an answer, and a refusal it
/// carries shown as text.
pub fn p2p_status(data: &[u8]) {
    let _ = wire::parse_status(data).map(|a| a.map_err(|e| e.to_string()));
}

/// Configuration files: two of the repository's test clusters and the defaults written out.
pub fn config_corpus() -> Vec<Vec<u8>> {
    vec![
        include_bytes!("../../test-configs/test-2-nodes/n0/derecho.cfg").to_vec(),
        include_bytes!("../../test-configs/test-6-nodes/n3/derecho.cfg").to_vec(),
        Config::default().to_ini_string().into_bytes(),
    ]
}

/// Checks one input of `derecho.cfg`: read as the text of a configuration file (invalid UTF-8
/// replaced, as a lossy reader would).
pub fn derecho_cfg(data: &[u8]) {
    let _ = Config::from_ini_str(&String::from_utf8_lossy(data), "fuzz.cfg");
}

/// Layout files: one with two shards of different delivery modes and profiles, one with
/// reserved node ids.
pub fn layout_corpus() -> Vec<Vec<u8>> {
    vec![
        br#"[{"type_alias": "Mixed", "layout": [{"min_nodes_by_shard": [1, 1],
             "max_nodes_by_shard": [1, 1], "delivery_modes_by_shard": ["Ordered", "Raw"],
             "profiles_by_shard": ["DEFAULT", "BULK"]}]}]"#
            .to_vec(),
        br#"[{"layout": [{"min_nodes_by_shard": [3], "max_nodes_by_shard": [3],
              "reserved_node_ids_by_shard": [["*7", "8"]]}]}]"#
            .to_vec(),
    ]
}

/// Checks one input of a layout file: read as its JSON text (invalid UTF-8 replaced).
pub fn layout_json(data: &[u8]) {
    let _ = LayoutPolicy::from_json_str(&String::from_utf8_lossy(data));
}

/// The view a state-transfer stream of the corpus is for.
pub const TRANSFER_VID: u64 = 7;
/// The subgroup a state-transfer stream of the corpus carries.
pub const TRANSFER_SUBGROUP: u32 = 3;

/// A state-transfer stream for view [`TRANSFER_VID`] and subgroup [`TRANSFER_SUBGROUP`], as
/// `transfer::send` writes it: the header, then the chunks, then `end` (the empty chunk, or
/// an [`abort`]).
pub fn transfer_stream(chunks: &[&[u8]], end: &[u8]) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&TRANSFER_VID.to_le_bytes());
    b.extend_from_slice(&TRANSFER_SUBGROUP.to_le_bytes());
    for c in chunks {
        b.extend_from_slice(&(c.len() as u32).to_le_bytes());
        b.extend_from_slice(c);
    }
    b.extend_from_slice(end);
    b
}

/// The end of a state-transfer stream whose sender gave up, with its `reason`.
pub fn abort(reason: &str) -> Vec<u8> {
    let mut b = ABORT_CHUNK.to_le_bytes().to_vec();
    b.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    b.extend_from_slice(reason.as_bytes());
    b
}

/// State hooks that load a state by reading `take` bytes of it (all of it for `None`) and
/// keep nothing; what they leave unread the receiver drains.
#[derive(Clone, Copy, Debug)]
pub struct Loader {
    /// How many bytes of the state to read; `None` reads it to its end.
    pub take: Option<u64>,
}

impl StateHooks for Loader {
    fn save_state(&self, _: usize, _: &mut dyn Write) -> io::Result<()> {
        Ok(())
    }

    fn load_state(&self, _: usize, input: &mut dyn Read) -> io::Result<()> {
        let mut state = Vec::new();
        match self.take {
            Some(n) => input.take(n).read_to_end(&mut state)?,
            None => input.read_to_end(&mut state)?,
        };
        Ok(())
    }
}

/// State-transfer streams: a state in three chunks, an empty state, and two aborted
/// transfers (after a chunk, and at once with an empty reason).
pub fn transfer_corpus() -> Vec<Vec<u8>> {
    let end = 0u32.to_le_bytes();
    vec![
        transfer_stream(&[b"replica ", b"state", b"!"], &end),
        transfer_stream(&[], &end),
        transfer_stream(&[b"half a state"], &abort("subgroup 3: no replica")),
        transfer_stream(&[], &abort("")),
    ]
}

/// Checks one input of a state-transfer connection: read as the stream for view
/// [`TRANSFER_VID`] expected to carry subgroup 1 or 3, its state loaded whole, loaded in part
/// (the rest drained), and skipped (no hooks). Returns in how many of the three it was a
/// transfer that completed.
pub fn state_transfer(data: &[u8]) -> usize {
    let whole = Loader { take: None };
    let part = Loader { take: Some(4) };
    let mut loaded = 0;
    for hooks in [Some(&whole), Some(&part), None] {
        let hooks = hooks.map(|h| h as &dyn StateHooks);
        if transfer::read_one(data, TRANSFER_VID, &[1, 3], hooks).is_ok() {
            loaded += 1;
        }
    }
    loaded
}

/// The name of the persistent log of [`LogCorpus`].
pub const LOG_NAME: &str = "fuzzlog";
/// Segment size of the log of [`LogCorpus`]: small, so a few entries fill several segments and
/// every segment but the last is sealed.
pub const LOG_SEGMENT_BYTES: u64 = 120;

/// The options the log of [`LogCorpus`] is opened with.
pub fn log_options(verify_sealed: bool, read_only: bool) -> LogOptions {
    LogOptions {
        segment_bytes: LOG_SEGMENT_BYTES,
        read_only,
        verify_sealed,
        ..LogOptions::default()
    }
}

/// The files a persistent log left on storage, that its recovery reads back.
#[derive(Clone, Debug)]
pub struct LogCorpus {
    /// Every file of a log of eight entries over several segments, its two oldest trimmed,
    /// sorted by name: the segments and the metadata record.
    pub files: Vec<(String, Vec<u8>)>,
    /// Which of `files` is the metadata record.
    pub meta: usize,
    /// The metadata record of the same log once a truncate was decided but not carried out
    /// (its segments could be neither cut nor removed).
    pub truncating: Vec<u8>,
}

impl LogCorpus {
    /// Writes the log in memory and collects its files.
    pub fn new() -> derecho::persist::Result<Self> {
        let storage = Arc::new(SimStorage::new());
        let log = Log::open(storage.clone(), LOG_NAME, log_options(true, false))?;
        for v in 1..=8i64 {
            let payload = format!("entry {v} ").repeat(v as usize % 4 + 1);
            log.append(
                v,
                Hlc::new(100 * v as u64, v as u64 % 2),
                v as u8 % 3,
                payload.as_bytes(),
            )?;
        }
        log.persist()?;
        log.trim(2)?;
        let mut names = storage.list()?;
        names.sort();
        let mut files = Vec::with_capacity(names.len());
        for n in names {
            let b = storage.read_all(&n)?;
            files.push((n, b));
        }
        storage.fail(SimOp::Truncate);
        storage.fail(SimOp::Remove);
        // Expected to fail: the failed truncate is what leaves its decision in the record.
        let _ = log.truncate(5);
        let meta_name = format!("{LOG_NAME}.meta");
        let truncating = storage.read_all(&meta_name)?;
        let meta = files
            .iter()
            .position(|(n, _)| *n == meta_name)
            .unwrap_or(files.len());
        Ok(Self {
            files,
            meta,
            truncating,
        })
    }

    /// The valid versions of file `part`: the file, and for the metadata record also its
    /// version with an unfinished truncate.
    pub fn corpus_of(&self, part: usize) -> Vec<Vec<u8>> {
        let mut corpus: Vec<Vec<u8>> = self
            .files
            .get(part)
            .map(|f| f.1.clone())
            .into_iter()
            .collect();
        if part == self.meta {
            corpus.push(self.truncating.clone());
        }
        corpus
    }

    /// Checks one input as file `part` of the log, the other files staying valid: see
    /// [`open_and_read`]. A `part` out of range checks the valid files.
    pub fn log_file(&self, part: usize, data: &[u8]) -> usize {
        let mut files = self.files.clone();
        if let Some(f) = files.get_mut(part) {
            f.1 = data.to_vec();
        }
        open_and_read(&files)
    }

    /// Checks one input of a persistent log's files: its first byte picks the file (modulo
    /// their count) and the rest replaces it.
    pub fn log_any_file(&self, data: &[u8]) -> usize {
        match data.split_first() {
            Some((pick, rest)) if !self.files.is_empty() => {
                self.log_file(usize::from(*pick) % self.files.len(), rest)
            }
            _ => open_and_read(&self.files),
        }
    }

    /// Checks one input as the payload of the log's metadata record, framed as the log frames
    /// it (magic, length, CRC32) so that it reaches the record's decoder instead of failing
    /// the checksum: see [`open_and_read`].
    pub fn log_metadata(&self, payload: &[u8]) -> usize {
        self.log_file(self.meta, &frame_metadata(payload))
    }

    /// The payloads of the two valid metadata records (see [`LogCorpus::truncating`]), their
    /// framing taken off.
    pub fn metadata_payloads(&self) -> Vec<Vec<u8>> {
        self.corpus_of(self.meta)
            .into_iter()
            .map(|b| b.get(METADATA_FRAME..).unwrap_or_default().to_vec())
            .collect()
    }
}

/// Bytes of the metadata record's framing: magic, u64 length and CRC32.
pub const METADATA_FRAME: usize = 16;

/// The metadata record's framing (magic, length, CRC32) in front of `payload`, as the log
/// writes it.
pub fn frame_metadata(payload: &[u8]) -> Vec<u8> {
    let mut out = b"DPOB".to_vec();
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Opens a log over `files` in each mode of recovery (every entry verified; sealed segments
/// walked header by header; the same, read-only); a log that opens is read back whole, its
/// latest entry and an entry by time looked up. Returns in how many modes it opened.
pub fn open_and_read(files: &[(String, Vec<u8>)]) -> usize {
    let mut opened = 0;
    for (verify_sealed, read_only) in [(true, false), (false, false), (false, true)] {
        let storage = Arc::new(SimStorage::new());
        if files
            .iter()
            .any(|(name, bytes)| storage.replace(name, bytes).is_err())
        {
            continue;
        }
        if let Ok(log) = Log::open(storage, LOG_NAME, log_options(verify_sealed, read_only)) {
            for entry in log.iter_from(INVALID) {
                let _ = entry;
            }
            let _ = log.get(log.latest_version());
            let _ = log.at_time(Hlc::new(450, 0));
            opened += 1;
        }
    }
    opened
}
