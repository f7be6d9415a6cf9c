//! `[SECURITY] mode = secret` across in-process members over tcp: a group whose members hold the
//! group secret forms, admits a joiner with state transfer and serves an external client that
//! holds the client secret, while intruders are refused on every port: a node with a wrong
//! secret or none, an open-mode client, bytes in clear on each listener, a client that sends a
//! member-only frame, a client credential used on a member port. Nothing is installed for them,
//! nobody is evicted, and the group keeps delivering.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use derecho::config::{Config, SecurityMode};
use derecho::rpc::external::ExternalClient;
use derecho::rpc::wire::{self, Kind};
use derecho::rpc::Group;
use derecho::secure::{self, Credentials, Role, Secret};
use derecho_tests::kv::group::{assert_joined, get_as_client, limits, put, start};
use derecho_tests::ports::{listen_port, local_member};

struct Keys {
    dir: PathBuf,
    group: PathBuf,
    clients: PathBuf,
    wrong: PathBuf,
}

impl Keys {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("derecho-sec-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let make = |name: &str| {
            let p = dir.join(name);
            Secret::generate().unwrap().save(&p).unwrap();
            p
        };
        Keys {
            group: make("group.key"),
            clients: make("clients.key"),
            wrong: make("wrong.key"),
            dir,
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn config(id: u32, contact: u16, group_key: Option<&Path>, clients_key: &Path) -> Config {
    let mut c = local_member(id, contact).unwrap();
    c.derecho.join_timeout_ms = 5_000;
    if let Some(k) = group_key {
        c.security.mode = SecurityMode::Secret;
        c.security.group_secret_file = k.to_owned();
        c.security.client_secret_file = clients_key.to_owned();
    }
    c
}

/// Writes `bytes` in clear to `addr` and reports whether the server refused them: it closed
/// the connection with no answer, or (the GMS port, which tells open-mode nodes why) with
/// nothing but a GMS refusal.
fn refused_in_clear(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut answer = Vec::new();
    // The server reads 8 bytes of preamble, finds no authenticated protocol, and closes.
    let _ = s.read_to_end(&mut answer);
    answer.is_empty()
        || matches!(
            derecho::gms::wire::read_msg(&mut &answer[..]),
            Ok(derecho::gms::GmsMessage::Refused(_))
        )
}

#[test]
fn a_secure_group_serves_its_members_and_clients_and_refuses_intruders() {
    let keys = Keys::new("group");
    let contact = listen_port().unwrap();
    let cfgs: Vec<Config> = (0..3)
        .map(|id| config(id, contact, Some(&keys.group), &keys.clients))
        .collect();
    let groups: Vec<Group> = std::thread::scope(|s| {
        let hs: Vec<_> = cfgs.iter().map(|c| s.spawn(move || start(c))).collect();
        hs.into_iter().map(|h| h.join().unwrap().unwrap()).collect()
    });
    let first_vid = groups[0].view().vid;
    assert_eq!(groups[0].members().len(), 3);
    assert_eq!(
        put(&groups[0], "before", 7),
        3,
        "ordered updates reach every member"
    );

    // A node with a wrong group secret, and one without any, cannot join.
    let wrong = config(7, contact, Some(&keys.wrong), &keys.clients);
    let Err(e) = start(&wrong) else {
        panic!("a wrong secret must not join")
    };
    assert!(e.to_string().contains("authenticat"), "{e}");
    let open = config(8, contact, None, &keys.clients);
    let Err(e) = start(&open) else {
        panic!("a node without credentials must not join")
    };
    assert!(e.to_string().contains("mode = secret"), "{e}");

    // Bytes in clear on every listener of a member: a GMS join request, garbage, a fabric
    // hello-sized blob, a P2P hello.
    let d = &cfgs[1].derecho;
    let ip = d.local_ip;
    let join_in_clear = br#"{"Join":{"version":1,"member":{"id":9}}}"#;
    for (port, what) in [
        (d.gms_port, &join_in_clear[..]),
        (d.state_transfer_port, &[0xAB; 64][..]),
        (d.sst_port, &[0u8; 64][..]),
        (d.external_port, b"DRP2P\0\0\x01GET / HTTP/1.1\r\n\r\n"),
    ] {
        assert!(
            refused_in_clear(SocketAddr::new(ip, port), what),
            "port {port} answered bytes sent in clear"
        );
    }

    // A client credential does not open a member port: it cannot even start a handshake.
    let client_creds = Credentials::Client {
        clients: Secret::load(&keys.clients).unwrap(),
    };
    let tcp = TcpStream::connect(SocketAddr::new(ip, d.gms_port)).unwrap();
    let dialed = secure::connect(
        tcp,
        &client_creds,
        Role::Gms,
        900,
        None,
        Duration::from_secs(2),
    );
    let Err(e) = dialed else {
        panic!("client credentials opened the GMS port")
    };
    assert!(e.to_string().contains("external client"), "{e}");

    // The external client with the client secret is served.
    let ext_addr = SocketAddr::new(ip, cfgs[2].derecho.external_port);
    assert_eq!(
        get_as_client(ext_addr, client_creds.clone(), "before"),
        Some(vec![7])
    );
    // Without credentials, or with the group secret posing as the client secret, it is not.
    assert!(ExternalClient::connect(ext_addr, limits(), Duration::from_secs(5)).is_err());
    let posing = Credentials::Client {
        clients: Secret::load(&keys.group).unwrap(),
    };
    assert!(
        ExternalClient::connect_with(ext_addr, limits(), Duration::from_secs(5), posing).is_err()
    );

    // A client that forges an ordered-RPC reply (a member-only frame) is cut off.
    let tcp = TcpStream::connect(ext_addr).unwrap();
    let (mut s, _) = secure::connect(
        tcp,
        &client_creds,
        Role::External,
        900,
        None,
        Duration::from_secs(5),
    )
    .unwrap();
    wire::write_hello(&mut s).unwrap();
    let mut body = 0u32.to_le_bytes().to_vec();
    body.push(0);
    wire::write_frame(&mut s, Kind::OrderedReply, 1, &[&body]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut buf = [0u8; 16];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "the member kept serving a client that forged a reply"
    );

    // A member with the secret joins, with state transfer, and everyone still delivers.
    let joiner_cfg = config(3, contact, Some(&keys.group), &keys.clients);
    let joiner = start(&joiner_cfg).unwrap();
    assert_joined(&groups[0], &joiner, first_vid, ("before", 7), &[0, 1, 2, 3]);
    drop(joiner);
    drop(groups);
}

#[test]
fn half_configured_or_exposed_security_is_a_clear_error() {
    let no_file = Config::from_ini_str("[SECURITY]\nmode = secret\n", "t.cfg").unwrap_err();
    assert!(
        no_file.to_string().contains("group_secret_file"),
        "{no_file}"
    );
    let no_mode =
        Config::from_ini_str("[SECURITY]\ngroup_secret_file = /tmp/k\n", "t.cfg").unwrap_err();
    assert!(no_mode.to_string().contains("mode = secret"), "{no_mode}");

    let keys = Keys::new("exposed");
    let reused = config(0, listen_port().unwrap(), Some(&keys.group), &keys.group);
    let Err(e) = start(&reused) else {
        panic!("a client secret equal to the group secret must not start a member")
    };
    assert!(e.to_string().contains("client secret equals"), "{e}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&keys.group, std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    let cfg = config(0, listen_port().unwrap(), Some(&keys.group), &keys.clients);
    let Err(e) = start(&cfg) else {
        panic!("an exposed secret must not start a member")
    };
    assert!(e.to_string().contains("chmod 600"), "{e}");
}
