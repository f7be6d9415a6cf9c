//! Makes and checks the credentials of `[SECURITY] mode = secret` and `mode = certificate`.
//!
//! ```text
//! derecho-secret new FILE                  # a group or client secret: 32 random bytes as
//!                                          # 64 hex digits, mode 0600; never overwrites
//! derecho-secret check FILE                # says whether FILE is a usable secret
//! derecho-secret ca DIR [--group NAME] [--days N]
//!                                          # a group CA: DIR/ca.pem and DIR/ca.key (0600)
//! derecho-secret issue DIR (--member ID | --client NAME) [--days N] [--out OUT]
//!                                          # a certificate from the CA in DIR:
//!                                          # OUT/member-ID.{pem,key} or OUT/client-NAME.{pem,key}
//! derecho-secret check CA_FILE CERT_FILE KEY_FILE
//!                                          # says whom the certificate names, or why it
//!                                          # cannot be used under that CA
//! derecho-secret signing-key FILE          # an Ed25519 key for `[PERS] signed_logs`
//!                                          # (PKCS#8 PEM, mode 0600); prints its public key
//! derecho-secret public-key FILE           # prints the public key of a signing key
//! ```

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use derecho::secure::{GroupCa, Identity, Secret, TlsCredentials};

/// Days a CA stays valid unless `--days` says otherwise.
const CA_DAYS: u32 = 3650;
/// Days a member's or client's certificate stays valid unless `--days` says otherwise.
const CERT_DAYS: u32 = 365;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("new") => match &args[1..] {
            [file] => new_secret(Path::new(file)),
            _ => return usage(),
        },
        Some("check") => match &args[1..] {
            [file] => Secret::load(Path::new(file))
                .map(|_| format!("{file} holds a usable secret"))
                .map_err(|e| e.to_string()),
            [ca, cert, key] => TlsCredentials::load(Path::new(ca), Path::new(cert), Path::new(key))
                .map(|c| format!("{cert} names {} and is valid under {ca}", c.identity()))
                .map_err(|e| e.to_string()),
            _ => return usage(),
        },
        Some("signing-key") => match &args[1..] {
            [file] => derecho::persist::generate_signing_key(Path::new(file))
                .map(|public| {
                    format!("wrote a signing key to {file} (mode 0600); public key {public}")
                })
                .map_err(|e| e.to_string()),
            _ => return usage(),
        },
        Some("public-key") => match &args[1..] {
            [file] => derecho::persist::public_key_of(Path::new(file))
                .map(|public| public.to_string())
                .map_err(|e| e.to_string()),
            _ => return usage(),
        },
        Some("ca") => match Options::parse(&args[1..]) {
            Some(o) if o.member.is_none() && o.client.is_none() && o.out.is_none() => make_ca(&o),
            _ => return usage(),
        },
        Some("issue") => match Options::parse(&args[1..]) {
            Some(o) if o.group.is_none() => issue(&o),
            _ => return usage(),
        },
        _ => return usage(),
    };
    match result {
        Ok(said) => {
            println!("{said}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("derecho-secret: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The directory and flags of `ca` and `issue`.
struct Options {
    dir: PathBuf,
    group: Option<String>,
    days: Option<u32>,
    member: Option<u32>,
    client: Option<String>,
    out: Option<PathBuf>,
}

impl Options {
    fn parse(args: &[String]) -> Option<Self> {
        let (dir, mut rest) = args.split_first()?;
        let mut o = Options {
            dir: PathBuf::from(dir),
            group: None,
            days: None,
            member: None,
            client: None,
            out: None,
        };
        while let [flag, value, more @ ..] = rest {
            match flag.as_str() {
                "--group" => o.group = Some(value.clone()),
                "--days" => o.days = Some(value.parse().ok().filter(|d| *d > 0)?),
                "--member" => o.member = Some(value.parse().ok()?),
                "--client" => o.client = Some(value.clone()),
                "--out" => o.out = Some(PathBuf::from(value)),
                _ => return None,
            }
            rest = more;
        }
        rest.is_empty().then_some(o)
    }
}

fn new_secret(file: &Path) -> Result<String, String> {
    let s = Secret::generate().map_err(|e| e.to_string())?;
    s.save(file)
        .map_err(|e| format!("cannot create {}: {e}", file.display()))?;
    Ok(format!(
        "wrote a new secret to {} (mode 0600)",
        file.display()
    ))
}

fn make_ca(o: &Options) -> Result<String, String> {
    let group = o.group.as_deref().unwrap_or("derecho");
    std::fs::create_dir_all(&o.dir).map_err(|e| format!("{}: {e}", o.dir.display()))?;
    let (cert, key) = (o.dir.join("ca.pem"), o.dir.join("ca.key"));
    GroupCa::new(group, o.days.unwrap_or(CA_DAYS))
        .and_then(|ca| ca.save(&cert, &key))
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "wrote the CA of group {group:?}: {} (give it to every member and client) and {} \
         (mode 0600; keep it off the members)",
        cert.display(),
        key.display()
    ))
}

fn issue(o: &Options) -> Result<String, String> {
    let who = match (o.member, &o.client) {
        (Some(id), None) => Identity::Member(id),
        (None, Some(name)) => Identity::client(name).map_err(|e| e.to_string())?,
        _ => return Err("name exactly one holder: --member ID or --client NAME".into()),
    };
    let stem = match &who {
        Identity::Member(id) => format!("member-{id}"),
        Identity::Client(name) => format!("client-{name}"),
    };
    let ca =
        GroupCa::load(&o.dir.join("ca.pem"), &o.dir.join("ca.key")).map_err(|e| e.to_string())?;
    let out = o.out.clone().unwrap_or_else(|| o.dir.clone());
    std::fs::create_dir_all(&out).map_err(|e| format!("{}: {e}", out.display()))?;
    let (cert, key) = (
        out.join(format!("{stem}.pem")),
        out.join(format!("{stem}.key")),
    );
    ca.issue(&who, o.days.unwrap_or(CERT_DAYS))
        .and_then(|issued| issued.save(&cert, &key))
        .map_err(|e| e.to_string())?;
    Ok(format!(
        "issued to {who}: {} and {} (mode 0600)",
        cert.display(),
        key.display()
    ))
}

fn usage() -> ExitCode {
    eprintln!(
        "usage: derecho-secret new FILE\n       \
         derecho-secret check FILE\n       \
         derecho-secret ca DIR [--group NAME] [--days N]\n       \
         derecho-secret issue DIR (--member ID | --client NAME) [--days N] [--out OUT]\n       \
         derecho-secret check CA_FILE CERT_FILE KEY_FILE\n       \
         derecho-secret signing-key FILE\n       \
         derecho-secret public-key FILE"
    );
    ExitCode::from(2)
}
