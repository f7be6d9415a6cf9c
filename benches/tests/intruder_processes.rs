//! Intruders against a secure group of real processes on 127.0.0.1, started by `launch`: a
//! node with a certificate from another CA (certificate mode) or another secret (secret mode)
//! asks to join while the members stream ordered messages. It must stop with an error that
//! names the refusal, the members must log the refused handshakes, nothing may be installed
//! for it, nobody may be evicted, and the stream must pass the checker.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn launch(args: &[&str]) -> (String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_launch"))
        .args(args)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(
        out.status.success(),
        "launch {args:?} failed: {stdout}{stderr}"
    );
    (stdout, stderr)
}

fn intrude(mode: &[&str]) -> (String, String) {
    let mut args = vec![
        "--nodes",
        "3",
        "--payload",
        "1000",
        "--check",
        "--timeout",
        "120",
    ];
    args.extend_from_slice(mode);
    args.extend_from_slice(&["--intrude", "@700", "--intrude", "@1500", "--"]);
    args.extend_from_slice(&["stream_test", "3", "3000"]);
    launch(&args)
}

#[test]
fn an_intruder_with_a_certificate_of_another_ca_is_refused_while_the_group_streams() {
    let (out, err) = intrude(&["--certificates"]);
    // Nothing installed for the intruders, nobody evicted, the stream intact.
    assert!(
        out.contains("intruders=2 refused=2 admitted=0 members_at_first_report=3"),
        "{out}"
    );
    assert!(out.contains("check=ok "), "{out}");
    assert!(err.contains("refused a GMS connection"), "{err}");
}

#[test]
fn an_intruder_with_another_secret_is_refused_while_the_group_streams() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("group.key");
    derecho::secure::Secret::generate()
        .unwrap()
        .save(&key)
        .unwrap();
    let (out, err) = intrude(&["--secret", key.to_str().unwrap()]);
    assert!(
        out.contains("intruders=2 refused=2 admitted=0 members_at_first_report=3"),
        "{out}"
    );
    assert!(out.contains("check=ok "), "{out}");
    assert!(err.contains("refused a GMS connection"), "{err}");
}
