//! Signed logs: the chain verifies, tampering is named by version, a wrong key
//! fails, restarts and trims keep the chain, unsigned logs still open.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use derecho_persist::sign::{Signer, SIGNATURE_LEN};
use derecho_persist::{
    generate_signing_key, pack, public_key_of, BatchEntry, DeltaPersistent, Hlc, KeyError, Log,
    LogOptions, Persistent, PersistentField, SimStorage, Storage, VerifyError, INVALID,
};

const LOG: &str = "signed";

/// PKCS#8 v1 DER of an Ed25519 key whose secret is 32 copies of `seed`.
fn signer(seed: u8) -> Arc<Signer> {
    let mut der = vec![
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04,
        0x20,
    ];
    der.extend_from_slice(&[seed; 32]);
    Arc::new(Signer::from_pkcs8(&der).unwrap())
}

fn options(signer: Option<Arc<Signer>>, segment_bytes: u64) -> LogOptions {
    LogOptions {
        signer,
        segment_bytes,
        ..LogOptions::default()
    }
}

fn open(sim: &Arc<SimStorage>, signer: Option<Arc<Signer>>) -> Log {
    Log::open(sim.clone(), LOG, options(signer, 400)).unwrap()
}

fn v(seq: i32) -> i64 {
    pack(0, seq)
}

fn payload(seq: i32) -> Vec<u8> {
    format!("value number {seq}").into_bytes()
}

fn append(log: &Log, seqs: std::ops::Range<i32>) {
    for seq in seqs {
        log.append(
            v(seq),
            Hlc::new(seq as u64 * 10, 0),
            (seq % 3) as u8,
            &payload(seq),
        )
        .unwrap();
    }
}

/// Every record of the log's segments: (segment name, offset, version, payload length,
/// signed).
fn records(sim: &SimStorage) -> Vec<(String, usize, i64, usize, bool)> {
    let mut segs: Vec<String> = sim
        .list()
        .unwrap()
        .into_iter()
        .filter(|f| f.starts_with(LOG) && f.ends_with(".seg"))
        .collect();
    segs.sort();
    let mut out = Vec::new();
    for seg in segs {
        let bytes = sim.read_all(&seg).unwrap();
        let mut pos = 0;
        while pos < bytes.len() {
            let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
            let version = i64::from_le_bytes(bytes[pos + 8..pos + 16].try_into().unwrap());
            let signed = bytes[pos + 33] & 1 == 1;
            out.push((seg.clone(), pos, version, len, signed));
            pos += 36 + len + if signed { SIGNATURE_LEN } else { 0 };
        }
    }
    out
}

/// Flips bit 0 of byte `at` of the record of `version` (counted from the start of its
/// payload) and, if `fix_crc`, rewrites the checksum as an attacker would.
fn tamper(sim: &SimStorage, version: i64, at: usize, fix_crc: bool) {
    let (seg, pos, _, len, signed) = records(sim).into_iter().find(|r| r.2 == version).unwrap();
    let mut bytes = sim.read_all(&seg).unwrap();
    bytes[pos + 36 + at] ^= 1;
    if fix_crc {
        let end = pos + 36 + len + if signed { SIGNATURE_LEN } else { 0 };
        let crc = crc32fast::hash(&bytes[pos + 8..end]);
        bytes[pos + 4..pos + 8].copy_from_slice(&crc.to_le_bytes());
    }
    sim.replace(&seg, &bytes).unwrap();
}

#[test]
fn a_signed_log_verifies_with_its_key_and_not_with_another() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(1);
    let log = open(&sim, Some(key.clone()));
    append(&log, 0..10);
    let batch: Vec<Vec<u8>> = (10..15).map(payload).collect();
    let entries: Vec<BatchEntry<'_>> = (10..15)
        .zip(&batch)
        .map(|(seq, p)| BatchEntry {
            version: v(seq),
            hlc: Hlc::new(seq as u64 * 10, 0),
            kind: 0,
            payload: p,
        })
        .collect();
    log.append_batch(&entries).unwrap();
    log.persist().unwrap();
    assert!(log.segment_count() > 1, "the chain should cross segments");
    assert_eq!(verified(&log, &key), v(14));
    for seq in 0..15 {
        assert!(log.signature(v(seq)).unwrap().is_some(), "version {seq}");
    }
    assert_eq!(log.signature(v(99)).unwrap(), None);
    // Signatures of different entries differ (each covers its own entry and the chain).
    assert_ne!(log.signature(v(0)).unwrap(), log.signature(v(1)).unwrap());
    match log.verify(&signer(2).public_key()) {
        Err(VerifyError::BadSignature { version, .. }) => assert_eq!(version, v(0)),
        other => panic!("a wrong key verified: {other:?}"),
    }
}

fn verified(log: &Log, key: &Signer) -> i64 {
    log.verify(&key.public_key())
        .unwrap_or_else(|e| panic!("verify failed: {e}"))
}

fn failed_at(log: &Log, key: &Signer) -> VerifyError {
    match log.verify(&key.public_key()) {
        Err(e) => e,
        Ok(v) => panic!("verified up to {v} despite tampering"),
    }
}

#[test]
fn a_changed_payload_with_a_fixed_checksum_is_named() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(3);
    let log = open(&sim, Some(key.clone()));
    append(&log, 0..12);
    log.persist().unwrap();
    drop(log);
    tamper(&sim, v(5), 2, true);
    let log = open(&sim, None);
    assert_eq!(
        log.len(),
        12,
        "the checksum was fixed: the open keeps every entry"
    );
    let e = failed_at(&log, &key);
    assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
    assert_eq!(e.version(), v(5));
}

#[test]
fn a_changed_signature_is_named() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(4);
    let log = open(&sim, Some(key.clone()));
    append(&log, 0..12);
    log.persist().unwrap();
    drop(log);
    tamper(&sim, v(7), payload(7).len() + 10, true);
    let log = open(&sim, None);
    let e = failed_at(&log, &key);
    assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
    assert_eq!(e.version(), v(7));
}

#[test]
fn a_flipped_byte_under_an_open_log_is_named() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(5);
    let log = open(&sim, Some(key.clone()));
    append(&log, 0..12);
    log.persist().unwrap();
    tamper(&sim, v(3), 0, false);
    let e = failed_at(&log, &key);
    assert!(matches!(e, VerifyError::Unreadable { .. }), "{e}");
    assert_eq!(e.version(), v(3));
}

#[test]
fn a_removed_entry_breaks_the_chain_at_the_next_one() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(6);
    let log = Log::open(sim.clone(), LOG, options(Some(key.clone()), 1 << 20)).unwrap();
    append(&log, 0..6);
    log.persist().unwrap();
    drop(log);
    // Cut entry 2 out of the (single) segment: every record stays well formed.
    let recs = records(&sim);
    let (seg, start, ..) = recs[2].clone();
    let (_, end, ..) = recs[3].clone();
    let mut bytes = sim.read_all(&seg).unwrap();
    bytes.drain(start..end);
    sim.replace(&seg, &bytes).unwrap();
    let log = open(&sim, None);
    assert_eq!(log.len(), 5);
    let e = failed_at(&log, &key);
    assert_eq!(e.version(), v(3), "{e}");
}

#[test]
fn a_restart_continues_the_chain() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(7);
    let log = open(&sim, Some(key.clone()));
    append(&log, 0..5);
    log.persist().unwrap();
    drop(log);
    let log = open(&sim, Some(key.clone()));
    append(&log, 5..9);
    log.persist().unwrap();
    // Unsynced appends lost in a crash: the chain continues from the last durable entry.
    append(&log, 9..12);
    drop(log);
    sim.crash(11);
    let log = open(&sim, Some(key.clone()));
    let survived = log.latest_version();
    assert!(survived >= v(8));
    append(&log, 20..23);
    log.persist().unwrap();
    assert_eq!(verified(&log, &key), v(22));
    // A truncate continues the chain from the newest entry kept.
    log.truncate(v(6)).unwrap();
    append(&log, 30..33);
    assert_eq!(verified(&log, &key), v(32));
}

#[test]
fn replicas_with_one_key_write_identical_logs() {
    let key = signer(8);
    let (a, b) = (Arc::new(SimStorage::new()), Arc::new(SimStorage::new()));
    for sim in [&a, &b] {
        let log = open(sim, Some(key.clone()));
        append(&log, 0..10);
        log.persist().unwrap();
    }
    let segs = a.list().unwrap();
    for name in segs.iter().filter(|n| n.ends_with(".seg")) {
        assert_eq!(
            a.read_all(name).unwrap(),
            b.read_all(name).unwrap(),
            "{name}"
        );
    }
}

#[test]
fn trimming_keeps_the_chain_verifiable() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(9);
    let log = open(&sim, Some(key.clone()));
    append(&log, 0..20);
    let anchor = log.signature(v(9)).unwrap().unwrap();
    log.trim(v(10)).unwrap();
    assert_eq!(log.earliest_version(), v(10));
    assert_eq!(verified(&log, &key), v(19));
    // The newest trimmed entry's signature is kept as the anchor.
    assert_eq!(log.signature(v(9)).unwrap(), Some(anchor));
    assert_eq!(log.signature(v(8)).unwrap(), None);
    drop(log);
    // The anchor survives a restart; tampering with it is caught at the first retained entry.
    let log = open(&sim, Some(key.clone()));
    assert_eq!(verified(&log, &key), v(19));
    // Trimming everything keeps the tip as the anchor: appends still chain.
    log.trim(v(100)).unwrap();
    assert!(log.is_empty());
    assert_eq!(verified(&log, &key), INVALID);
    append(&log, 20..25);
    assert_eq!(verified(&log, &key), v(24));
    drop(log);
    let log = open(&sim, Some(key.clone()));
    assert_eq!(verified(&log, &key), v(24));
    // A truncate below the trim point empties the log and restarts the chain.
    log.truncate(INVALID).unwrap();
    append(&log, 40..43);
    assert_eq!(verified(&log, &key), v(42));
}

#[test]
fn a_forged_anchor_fails_the_first_retained_entry() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(10);
    let log = open(&sim, Some(key.clone()));
    append(&log, 0..8);
    log.trim(v(4)).unwrap();
    drop(log);
    // Rewrite the metadata with another anchor signature, checksum and all.
    let meta_name = format!("{LOG}.meta");
    let bytes = sim.read_all(&meta_name).unwrap();
    let mut payload = bytes[16..].to_vec();
    let n = payload.len();
    payload[n - 1] ^= 1;
    let mut framed = b"DPOB".to_vec();
    framed.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    framed.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    framed.extend_from_slice(&payload);
    sim.replace(&meta_name, &framed).unwrap();
    let log = open(&sim, None);
    let e = failed_at(&log, &key);
    assert!(matches!(e, VerifyError::BadSignature { .. }), "{e}");
    assert_eq!(e.version(), v(4));
}

/// The format number at the start of the metadata payload.
fn meta_format(sim: &SimStorage) -> u32 {
    let bytes = sim.read_all(&format!("{LOG}.meta")).unwrap();
    u32::from_le_bytes(bytes[16..20].try_into().unwrap())
}

#[test]
fn unsigned_logs_open_and_signing_starts_where_they_end() {
    let sim = Arc::new(SimStorage::new());
    let log = open(&sim, None);
    append(&log, 0..6);
    log.trim(v(1)).unwrap();
    assert_eq!(
        meta_format(&sim),
        1,
        "a log never signed keeps the old format"
    );
    assert!(records(&sim).iter().all(|r| !r.4));
    drop(log);
    let key = signer(11);
    let log = open(&sim, Some(key.clone()));
    assert_eq!(
        meta_format(&sim),
        2,
        "opening with a signer marks the log signed"
    );
    assert_eq!(log.len(), 5);
    assert_eq!(log.get(v(3)).unwrap().unwrap().payload, payload(3));
    append(&log, 6..10);
    assert_eq!(log.signature(v(5)).unwrap(), None);
    assert!(log.signature(v(6)).unwrap().is_some());
    // The unsigned history is named; once trimmed away, the signed part verifies.
    let e = failed_at(&log, &key);
    assert!(matches!(e, VerifyError::Unsigned { .. }), "{e}");
    assert_eq!(e.version(), v(1));
    log.trim(v(6)).unwrap();
    assert_eq!(verified(&log, &key), v(9));
    // Read-only opens of a signed log need no key and write nothing.
    drop(log);
    let ro = LogOptions {
        read_only: true,
        ..LogOptions::default()
    };
    let log = Log::open(sim.clone(), LOG, ro).unwrap();
    assert_eq!(verified(&log, &key), v(9));
}

#[test]
fn key_files_are_private_pem_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.pem");
    let public = generate_signing_key(&path).unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{text}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(public_key_of(&path).unwrap(), public);
    let signer = Signer::from_key_file(&path).unwrap();
    assert_eq!(signer.public_key(), public);
    assert!(!format!("{signer:?}").contains(&text[30..60]));
    // Never overwritten.
    assert!(generate_signing_key(&path).is_err());
    // Missing, world-readable and malformed files are refused with the path named.
    let missing = Signer::from_key_file(&dir.path().join("nope.pem")).unwrap_err();
    assert!(missing.is_not_found(), "{missing}");
    assert!(missing.to_string().contains("nope.pem"), "{missing}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let open = Signer::from_key_file(&path).unwrap_err();
        assert!(open.to_string().contains("chmod 600"), "{open}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let bad = Signer::from_key_file(&garbage).unwrap_err();
    assert!(matches!(bad, KeyError::File { .. }), "{bad}");
    assert!(bad.to_string().contains("PKCS#8"), "{bad}");
}

#[test]
fn persistent_fields_sign_their_versions() {
    let sim = Arc::new(SimStorage::new());
    let key = signer(12);
    let opts = LogOptions {
        signer: Some(key.clone()),
        ..LogOptions::default()
    };
    let mut p = Persistent::<u64>::open_with(sim.clone(), "p", opts.clone(), || 0).unwrap();
    for seq in 0..5 {
        *p.get_mut() += 1;
        p.version(v(seq), Hlc::new(seq as u64, 0)).unwrap();
    }
    assert!(p.signature(v(3)).unwrap().is_some());
    assert_eq!(p.verify(&key.public_key()).unwrap(), v(4));
    p.trim(v(2)).unwrap();
    let field: &dyn PersistentField = &p;
    assert_eq!(field.verify(&key.public_key()).unwrap(), v(4));
    assert!(field.signature(v(1)).unwrap().is_some(), "the anchor");

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Counter {
        n: u64,
        #[serde(skip)]
        pending: Option<u64>,
    }
    impl derecho_persist::Delta for Counter {
        type Delta = u64;
        fn take_delta(&mut self) -> Option<u64> {
            self.pending.take()
        }
        fn apply_delta(&mut self, d: u64) {
            self.n += d;
        }
    }
    let mut d =
        DeltaPersistent::<Counter>::open_with(sim.clone(), "d", opts, 2, Counter::default).unwrap();
    for seq in 0..7 {
        d.get_mut().n += 2;
        d.get_mut().pending = Some(2);
        d.version(v(seq), Hlc::new(seq as u64, 0)).unwrap();
    }
    assert_eq!(d.verify(&key.public_key()).unwrap(), v(6));
    d.trim(v(5)).unwrap();
    assert_eq!(d.verify(&key.public_key()).unwrap(), v(6));
    assert_eq!(d.get_version(v(6)).unwrap().unwrap().n, 14);
}
