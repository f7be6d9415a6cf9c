//! `[SECURITY] mode = certificate` across in-process members over tcp: a group whose members
//! hold certificates from the group CA forms, admits a joiner with state transfer and serves
//! an external client with a client certificate, while intruders are refused: a node whose
//! certificate comes from another CA (even one with the same name), a holder of a valid
//! certificate who claims another node's id, a node configured with another member's
//! certificate, a client certificate on a member port, a member certificate used as a client.
//! Nothing is installed for them, nobody is evicted, and the group keeps delivering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use derecho::config::{Config, SecurityMode};
use derecho::gms::view::MemberInfo;
use derecho::gms::wire::{self as gms_wire, GmsMessage, PROTOCOL_VERSION};
use derecho::rpc::external::ExternalClient;
use derecho::rpc::Group;
use derecho::secure::{self, Credentials, GroupCa, Identity, Role, TlsCredentials};
use derecho_tests::kv::group::{assert_joined, get_as_client, limits, put, start};
use derecho_tests::ports::{listen_port, local_member};

/// A group CA and the files it issued, in a directory removed on drop.
struct Pki {
    dir: PathBuf,
    ca: GroupCa,
    ca_file: PathBuf,
}

impl Pki {
    fn new(tag: &str, group: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("derecho-pki-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let ca = GroupCa::new(group, 30).unwrap();
        let ca_file = dir.join("ca.pem");
        ca.save(&ca_file, &dir.join("ca.key")).unwrap();
        Pki { dir, ca, ca_file }
    }

    /// Issues a certificate to `who`; returns its certificate and key files.
    fn issue(&self, who: &Identity) -> (PathBuf, PathBuf) {
        let stem = match who {
            Identity::Member(id) => format!("member-{id}"),
            Identity::Client(name) => format!("client-{name}"),
        };
        let (cert, key) = (
            self.dir.join(format!("{stem}.pem")),
            self.dir.join(format!("{stem}.key")),
        );
        if !cert.exists() {
            self.ca.issue(who, 30).unwrap().save(&cert, &key).unwrap();
        }
        (cert, key)
    }

    fn credentials(&self, who: &Identity) -> Credentials {
        let (cert, key) = self.issue(who);
        Credentials::Certificate(Arc::new(
            TlsCredentials::load(&self.ca_file, &cert, &key).unwrap(),
        ))
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Member `id`'s configuration in the certificate mode, trusting `trust`'s CA and holding
/// the certificate `holds` issued.
fn config(id: u32, contact: u16, trust: &Pki, holds: (&Path, &Path)) -> Config {
    let mut c = local_member(id, contact).unwrap();
    c.derecho.join_timeout_ms = 5_000;
    c.security.mode = SecurityMode::Certificate;
    c.security.ca_file = trust.ca_file.clone();
    c.security.cert_file = holds.0.to_owned();
    c.security.key_file = holds.1.to_owned();
    c
}

fn member_config(id: u32, contact: u16, pki: &Pki) -> Config {
    let (cert, key) = pki.issue(&Identity::Member(id));
    config(id, contact, pki, (&cert, &key))
}

fn gms(c: &Config) -> SocketAddr {
    SocketAddr::new(c.derecho.local_ip, c.derecho.gms_port)
}

#[test]
fn a_certificate_group_admits_its_holders_and_refuses_intruders() {
    let pki = Pki::new("group", "g");
    let contact = listen_port().unwrap();
    let cfgs: Vec<Config> = (0..3).map(|id| member_config(id, contact, &pki)).collect();
    let groups: Vec<Group> = std::thread::scope(|s| {
        let hs: Vec<_> = cfgs.iter().map(|c| s.spawn(move || start(c))).collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let first_vid = groups[0].view().vid;
    assert_eq!(put(&groups[0], "before", 9), 3);

    // A node whose certificate comes from another CA cannot join, even when that CA has
    // the group CA's very name.
    for rogue_name in ["rogue", "g"] {
        let rogue = Pki::new(&format!("rogue-{rogue_name}"), rogue_name);
        let (cert, key) = rogue.issue(&Identity::Member(7));
        // It trusts the real CA (whose certificate is public), so the refusal is the group's.
        let intruder = config(7, contact, &pki, (&cert, &key));
        let Err(e) = start(&intruder) else {
            panic!("a certificate of another CA must not load, let alone join")
        };
        assert!(e.to_string().contains("is not valid under the CA"), "{e}");
        let forged = Credentials::Certificate(Arc::new(
            TlsCredentials::from_pem(
                &std::fs::read_to_string(&rogue.ca_file).unwrap(),
                &std::fs::read_to_string(&cert).unwrap(),
                &std::fs::read_to_string(&key).unwrap(),
            )
            .unwrap(),
        ));
        let tcp = TcpStream::connect(gms(&cfgs[0])).unwrap();
        let e = secure::connect(tcp, &forged, Role::Gms, 7, None, Duration::from_secs(5))
            .map(|_| ())
            .unwrap_err();
        // It trusts only the rogue CA, so it refuses the member first.
        assert!(e.to_string().contains("certificate"), "{e}");
    }

    // A node configured with another member's certificate does not start.
    let (cert5, key5) = pki.issue(&Identity::Member(5));
    let Err(e) = start(&config(6, contact, &pki, (&cert5, &key5))) else {
        panic!("member 6 started with member 5's certificate")
    };
    assert!(e.to_string().contains("issued to member 5"), "{e}");

    // The holder of member 5's valid certificate who asks to join as node 6 is cut off
    // without an answer, and nothing is installed for either id.
    let tcp = TcpStream::connect(gms(&cfgs[0])).unwrap();
    let (mut s, peer) = secure::connect(
        tcp,
        &pki.credentials(&Identity::Member(5)),
        Role::Gms,
        6,
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(peer.map(|p| p.id), Some(0));
    let spare = local_member(6, contact).unwrap();
    let d = &spare.derecho;
    let claim = GmsMessage::Join {
        version: PROTOCOL_VERSION,
        member: MemberInfo {
            id: 6,
            ip: d.local_ip,
            gms_port: d.gms_port,
            fabric_port: d.sst_port,
            state_transfer_port: d.state_transfer_port,
            external_port: d.external_port,
        },
    };
    gms_wire::write_msg(&mut s, &claim).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut answer = [0u8; 64];
    assert!(
        matches!(s.read(&mut answer), Ok(0) | Err(_)),
        "the leader answered a join whose claimed id is not its certificate's"
    );

    // A client certificate opens no member port; a member's certificate is no client's.
    let client_creds = pki.credentials(&Identity::client("viewer").unwrap());
    let tcp = TcpStream::connect(gms(&cfgs[1])).unwrap();
    let e = secure::connect(
        tcp,
        &client_creds,
        Role::Gms,
        900,
        None,
        Duration::from_secs(2),
    )
    .map(|_| ())
    .unwrap_err();
    assert!(e.to_string().contains("external client"), "{e}");
    let mut as_client = member_config(1, contact, &pki);
    as_client.derecho.local_id = 1;
    let e = as_client.client_credentials().unwrap_err();
    assert!(e.to_string().contains("an external client"), "{e}");

    // The client certificate is served on the external port; no credentials are not.
    let ext_addr = SocketAddr::new(cfgs[2].derecho.local_ip, cfgs[2].derecho.external_port);
    assert_eq!(
        get_as_client(ext_addr, client_creds, "before"),
        Some(vec![9])
    );
    assert!(ExternalClient::connect(ext_addr, limits(), Duration::from_secs(5)).is_err());

    // A member with its certificate joins, with state transfer, and everyone delivers.
    let joiner = start(&member_config(3, contact, &pki)).unwrap();
    assert_joined(&groups[0], &joiner, first_vid, ("before", 9), &[0, 1, 2, 3]);
    drop(joiner);
    drop(groups);
}

#[test]
fn certificate_settings_that_do_not_fit_are_clear_errors() {
    let missing = Config::from_ini_str(
        "[SECURITY]\nmode = certificate\nca_file = /x/ca.pem\n",
        "t.cfg",
    )
    .unwrap_err();
    assert!(missing.to_string().contains("cert_file"), "{missing}");
    let stray = Config::from_ini_str("[SECURITY]\ncert_file = /x/c.pem\n", "t.cfg").unwrap_err();
    assert!(
        stray
            .to_string()
            .contains("belongs to `mode = certificate`"),
        "{stray}"
    );
    let mixed = Config::from_ini_str(
        "[SECURITY]\nmode = certificate\nca_file = a\ncert_file = b\nkey_file = c\n\
         group_secret_file = d\n",
        "t.cfg",
    )
    .unwrap_err();
    assert!(mixed.to_string().contains("group_secret_file"), "{mixed}");

    let pki = Pki::new("settings", "g");
    let (cert, key) = pki.issue(&Identity::Member(2));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o640)).unwrap();
    }
    let exposed = config(2, listen_port().unwrap(), &pki, (&cert, &key));
    let e = exposed.credentials().unwrap_err();
    assert!(e.to_string().contains("chmod 600"), "{e}");
}
