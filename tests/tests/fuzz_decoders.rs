//! Every decoder of the library that reads bytes from outside the process, run on seeded
//! mutations of valid inputs (`derecho_tests::fuzz`): no input may panic. The counts per
//! target are fixed so the suite stays fast; raise `FUZZ_ITERATIONS` for a longer hunt.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr};

use derecho::config::Config;
use derecho::gms::transfer::{self, StateHooks, ABORT_CHUNK, MAGIC, MAX_CHUNK, VERSION};
use derecho::gms::wire::{read_msg, write_msg};
use derecho::gms::{GmsMessage, MemberInfo, Refusal, View};
use derecho::layout::LayoutPolicy;
use derecho::rpc::wire::{self, Kind};
use derecho::rpc::RemoteError;
use derecho_tests::fuzz;

/// Inputs per target: `FUZZ_ITERATIONS` from the environment, 20,000 by default.
fn iterations() -> usize {
    std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

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

#[test]
fn gms_frames() {
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
    let corpus: Vec<Vec<u8>> = messages
        .iter()
        .map(|m| {
            let mut b = Vec::new();
            write_msg(&mut b, m).unwrap();
            b
        })
        .collect();
    let ran = fuzz::run("gms frames", 1, &corpus, iterations(), |b| {
        let _ = read_msg(&mut &b[..]);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("gms frames: {ran} inputs");
}

#[test]
fn rpc_frames_and_bodies() {
    let mut corpus = Vec::new();
    for (kind, parts) in [
        (Kind::Query, vec![&[1u8, 0, 0, 0][..], b"query"]),
        (Kind::Reply, vec![&[0u8][..], b"reply"]),
        (Kind::OrderedReply, vec![&[2u8, 0, 0, 0, 1][..], b"no"]),
        (Kind::Relay, vec![&[0u8, 0, 0, 0][..], b"update"]),
        (Kind::GetView, vec![]),
    ] {
        let mut b = Vec::new();
        wire::write_hello(&mut b).unwrap();
        wire::write_frame(&mut b, kind, 77, &parts).unwrap();
        corpus.push(b);
    }
    let mut ordered = wire::ordered_header(wire::Ordered {
        id: 5,
        caller: 2,
        stamp_us: 9,
    })
    .to_vec();
    ordered.extend_from_slice(b"body");
    corpus.push(ordered);
    let ran = fuzz::run("rpc frames", 2, &corpus, iterations(), |b| {
        let mut input = b;
        if wire::read_hello(&mut input).is_ok() {
            if let Ok(f) = wire::read_frame(&mut input, 64 << 10) {
                let _ = wire::take_u32(&f.body);
                let _ = wire::parse_status(&f.body);
            }
        }
        let _ = wire::parse_ordered(b);
        let _ = wire::decode::<(u64, String, Vec<u8>)>(b);
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("rpc frames: {ran} inputs");
}

#[test]
fn configuration_files() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut corpus = Vec::new();
    for dir in [
        "test-configs/test-2-nodes/n0",
        "test-configs/test-6-nodes/n3",
    ] {
        corpus.push(std::fs::read(format!("{root}/{dir}/derecho.cfg")).unwrap());
    }
    corpus.push(Config::default().to_ini_string().into_bytes());
    let ran = fuzz::run("derecho.cfg", 3, &corpus, iterations() / 4, |b| {
        let _ = Config::from_ini_str(&String::from_utf8_lossy(b), "fuzz.cfg");
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("derecho.cfg: {ran} inputs");
}

#[test]
fn layout_json() {
    let corpus = vec![
        br#"[{"type_alias": "Mixed", "layout": [{"min_nodes_by_shard": [1, 1],
             "max_nodes_by_shard": [1, 1], "delivery_modes_by_shard": ["Ordered", "Raw"],
             "profiles_by_shard": ["DEFAULT", "BULK"]}]}]"#
            .to_vec(),
        br#"[{"layout": [{"min_nodes_by_shard": [3], "max_nodes_by_shard": [3],
              "reserved_node_ids_by_shard": [["*7", "8"]]}]}]"#
            .to_vec(),
    ];
    let ran = fuzz::run("layout json", 4, &corpus, iterations() / 2, |b| {
        let _ = LayoutPolicy::from_json_str(&String::from_utf8_lossy(b));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("layout json: {ran} inputs");
}

#[test]
fn p2p_status_bodies() {
    let answers: Vec<wire::Answer> = vec![
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
    ];
    let corpus: Vec<Vec<u8>> = answers
        .iter()
        .map(|a| {
            let (status, body) = wire::status_parts(a);
            let mut b = status.to_vec();
            b.extend_from_slice(&body);
            assert_eq!(&wire::parse_status(&b).unwrap(), a);
            b
        })
        .collect();
    let ran = fuzz::run("p2p status", 5, &corpus, iterations() / 2, |b| {
        let _ = wire::parse_status(b).map(|a| a.map_err(|e| e.to_string()));
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!("p2p status: {ran} inputs");
}

/// A state-transfer stream for view 7 and subgroup 3, as `transfer::send` writes it: the
/// header, then the chunks, then `end` (the empty chunk, or an abort).
fn transfer_stream(chunks: &[&[u8]], end: &[u8]) -> Vec<u8> {
    let mut b = MAGIC.to_vec();
    b.extend_from_slice(&VERSION.to_le_bytes());
    b.extend_from_slice(&7u64.to_le_bytes());
    b.extend_from_slice(&3u32.to_le_bytes());
    for c in chunks {
        b.extend_from_slice(&(c.len() as u32).to_le_bytes());
        b.extend_from_slice(c);
    }
    b.extend_from_slice(end);
    b
}

fn abort(reason: &str) -> Vec<u8> {
    let mut b = ABORT_CHUNK.to_le_bytes().to_vec();
    b.extend_from_slice(&(reason.len() as u32).to_le_bytes());
    b.extend_from_slice(reason.as_bytes());
    b
}

/// Loads a state by reading `take` bytes of it (all of it for `None`); what it leaves unread
/// the receiver drains.
struct Loader {
    take: Option<u64>,
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

#[test]
fn state_transfer_streams() {
    let end = 0u32.to_le_bytes();
    let corpus = vec![
        transfer_stream(&[b"replica ", b"state", b"!"], &end),
        transfer_stream(&[], &end),
        transfer_stream(&[b"half a state"], &abort("subgroup 3: no replica")),
        transfer_stream(&[], &abort("")),
    ];
    let whole = Loader { take: None };
    let part = Loader { take: Some(4) };
    assert_eq!(
        transfer::read_one(&corpus[0][..], 7, &[3], Some(&whole)).unwrap(),
        3
    );
    let aborted = transfer::read_one(&corpus[2][..], 7, &[3], Some(&whole)).unwrap_err();
    assert!(aborted.to_string().contains("no replica"), "{aborted}");
    let loaded = std::cell::Cell::new(0);
    let ran = fuzz::run("state transfer", 6, &corpus, iterations(), |b| {
        for hooks in [Some(&whole), Some(&part), None] {
            let hooks = hooks.map(|h| h as &dyn StateHooks);
            if transfer::read_one(b, 7, &[1, 3], hooks).is_ok() {
                loaded.set(loaded.get() + 1);
            }
        }
    })
    .unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "state transfer: {ran} inputs, {} loads of 3 each",
        loaded.get()
    );
}

/// Lengths in a transfer stream are claims: a chunk over the limit is refused before anything
/// is read, and an abort reason is read up to its bound only.
#[test]
fn state_transfer_lengths_are_bounded() {
    let whole = Loader { take: None };
    let over = ((MAX_CHUNK + 1) as u32).to_le_bytes();
    let e =
        transfer::read_one(&transfer_stream(&[], &over)[..], 7, &[3], Some(&whole)).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    let mut huge_reason = ABORT_CHUNK.to_le_bytes().to_vec();
    huge_reason.extend_from_slice(&u32::MAX.to_le_bytes());
    huge_reason.extend_from_slice(b"why");
    let e = transfer::read_one(&transfer_stream(&[], &huge_reason)[..], 7, &[3], None).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof, "{e}");
}
