//! The `derecho-secret` tool: a group CA, certificates for members and clients, the checks
//! that tell an operator whether files fit, a group secret and a log-signing key. Every file it
//! makes is new (it never overwrites one) and private keys are readable by their owner only.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;

/// Runs the tool; returns (success, stdout + stderr).
fn tool(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_derecho-secret"))
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn a_ca_issues_certificates_that_check_and_nothing_is_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    let (ok, said) = tool(&["ca", s(&pki), "--group", "demo", "--days", "5"]);
    assert!(ok, "{said}");
    let (ok, said) = tool(&["issue", s(&pki), "--member", "3"]);
    assert!(ok, "{said}");
    let (ok, said) = tool(&[
        "issue",
        s(&pki),
        "--client",
        "dash-1",
        "--out",
        s(&dir.path().join("c")),
    ]);
    assert!(ok, "{said}");
    #[cfg(unix)]
    {
        assert_eq!(mode(&pki.join("ca.key")), 0o600);
        assert_eq!(mode(&pki.join("member-3.key")), 0o600);
    }
    let ca = pki.join("ca.pem");
    let (ok, said) = tool(&[
        "check",
        s(&ca),
        s(&pki.join("member-3.pem")),
        s(&pki.join("member-3.key")),
    ]);
    assert!(ok && said.contains("names member 3"), "{said}");
    let client = dir.path().join("c");
    let (ok, said) = tool(&[
        "check",
        s(&ca),
        s(&client.join("client-dash-1.pem")),
        s(&client.join("client-dash-1.key")),
    ]);
    assert!(ok && said.contains("client \"dash-1\""), "{said}");
    // A certificate with another certificate's key does not check.
    let (ok, said) = tool(&[
        "check",
        s(&ca),
        s(&client.join("client-dash-1.pem")),
        s(&pki.join("member-3.key")),
    ]);
    assert!(!ok && said.contains("is not the key"), "{said}");
    // Another CA's certificate does not check under this CA.
    let other = dir.path().join("other");
    assert!(tool(&["ca", s(&other)]).0);
    assert!(tool(&["issue", s(&other), "--member", "3"]).0);
    let (ok, said) = tool(&[
        "check",
        s(&ca),
        s(&other.join("member-3.pem")),
        s(&other.join("member-3.key")),
    ]);
    assert!(!ok && said.contains("is not valid under the CA"), "{said}");
    // Nothing is overwritten, and bad arguments are refused with the usage.
    let (ok, said) = tool(&["issue", s(&pki), "--member", "3"]);
    assert!(!ok && said.contains("File exists"), "{said}");
    let (ok, said) = tool(&["ca", s(&pki)]);
    assert!(!ok && said.contains("File exists"), "{said}");
    let (ok, said) = tool(&["issue", s(&pki), "--member", "1", "--client", "x"]);
    assert!(!ok && said.contains("exactly one holder"), "{said}");
    let (ok, said) = tool(&["issue", s(&pki), "--client", "not a name"]);
    assert!(!ok && said.contains("client name"), "{said}");
    let (ok, said) = tool(&["issue", s(&pki), "--days", "0", "--member", "4"]);
    assert!(!ok && said.contains("usage"), "{said}");
    let (ok, said) = tool(&["ca", s(&dir.path().join("far")), "--days", "4000000000"]);
    assert!(!ok && said.contains("longer than"), "{said}");
}

#[test]
fn secrets_and_signing_keys_are_made_once_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("group.key");
    assert!(tool(&["new", s(&secret)]).0);
    let (ok, said) = tool(&["check", s(&secret)]);
    assert!(ok && said.contains("usable secret"), "{said}");
    assert!(!tool(&["new", s(&secret)]).0, "a secret was overwritten");
    let signing = dir.path().join("sign.pem");
    let (ok, made) = tool(&["signing-key", s(&signing)]);
    assert!(ok, "{made}");
    #[cfg(unix)]
    assert_eq!(mode(&signing), 0o600);
    let (ok, public) = tool(&["public-key", s(&signing)]);
    assert!(ok && made.contains(public.trim()), "{made} / {public}");
    let (ok, said) = tool(&["check", s(&signing)]);
    assert!(!ok, "a signing key passed as a group secret: {said}");
}
