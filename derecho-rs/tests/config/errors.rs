//! One failing case per validation rule: the right variant, and a message that names the file,
//! the line and the key.

use derecho::config::{Config, ConfigError, ConfigLoader};

use super::{no_env, TempDir};

/// Parses `text` as `bad.cfg`, expecting an error.
fn fail(text: &str) -> ConfigError {
    match Config::from_ini_str(text, "bad.cfg") {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// The message names `bad.cfg`, the line and every given fragment (usually the key).
fn assert_names(err: &ConfigError, line: u32, fragments: &[&str]) {
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("bad.cfg:{line}:")),
        "no file/line in: {msg}"
    );
    for f in fragments {
        assert!(msg.contains(f), "`{f}` missing in: {msg}");
    }
}

#[test]
fn malformed_syntax() {
    for (text, line) in [
        ("[DERECHO]\nlocal_id 3\n", 2),
        ("local_id = 3\n", 1),
        ("[DERECHO]\n\n = 3\n", 3),
        ("[LAYOUT]\njson_layout = '[1,\n2\n", 2),
        ("[DERECHO\n", 1),
    ] {
        let e = fail(text);
        assert!(matches!(e, ConfigError::Syntax { .. }), "{text:?}: {e:?}");
        assert_names(&e, line, &["syntax error"]);
    }
}

#[test]
fn unknown_section() {
    let e = fail("[DERECHO]\nlocal_id = 1\n[SOSPDEMO]\nx = 1\n");
    assert!(matches!(e, ConfigError::UnknownSection { .. }), "{e:?}");
    assert_names(&e, 3, &["[SOSPDEMO]", "extra_sections"]);
    let e = fail("[derecho]\n");
    assert_names(&e, 1, &["did you mean `DERECHO`"]);
    let e = fail("[SUBGROUP]\n");
    assert!(matches!(e, ConfigError::UnknownSection { .. }), "{e:?}");
}

#[test]
fn unknown_key_with_suggestion() {
    let e = fail("[DERECHO]\nlcal_id = 1\n");
    match &e {
        ConfigError::UnknownKey { suggestion, .. } => {
            assert_eq!(suggestion.as_deref(), Some("DERECHO/local_id"));
        }
        other => panic!("{other:?}"),
    }
    assert_names(
        &e,
        2,
        &["DERECHO/lcal_id", "did you mean `DERECHO/local_id`"],
    );

    let e = fail("[SUBGROUP/A]\nwindow = 1\n");
    assert!(matches!(e, ConfigError::UnknownKey { .. }));
    assert_names(&e, 2, &["SUBGROUP/A/window", "SUBGROUP/A/window_size"]);

    let e = fail("[DERECHO]\nmax_reply_payload_size = 1000\n");
    assert_names(&e, 2, &["SUBGROUP/DEFAULT/max_reply_payload_size"]);

    let e = fail("[RDMA]\nxyzzy = 1\n");
    match &e {
        ConfigError::UnknownKey { suggestion, .. } => assert_eq!(*suggestion, None),
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_values() {
    for (text, key) in [
        ("[DERECHO]\nlocal_id = abc\n", "DERECHO/local_id"),
        ("[DERECHO]\nlocal_id = -1\n", "DERECHO/local_id"),
        (
            "[DERECHO]\nmax_node_id = 4294967296\n",
            "DERECHO/max_node_id",
        ),
        ("[PERS]\nreset = maybe\n", "PERS/reset"),
        ("[DERECHO]\nlocal_ip = 300.1.1.1\n", "DERECHO/local_ip"),
        ("[DERECHO]\ncontact_ip = localhost\n", "DERECHO/contact_ip"),
        ("[DERECHO]\ngms_port = http\n", "DERECHO/gms_port"),
        (
            "[DERECHO]\nrestart_leaders = 1.2.3.4,,5.6.7.8\n",
            "DERECHO/restart_leaders",
        ),
        (
            "[SUBGROUP/X]\nrdmc_send_algorithm = fast_send\n",
            "SUBGROUP/X/rdmc_send_algorithm",
        ),
        ("[RDMA]\nbackend = rdma\n", "RDMA/backend"),
        ("[RDMA]\nprovider =\n", "RDMA/provider"),
        (
            "[LOGGER]\ndefault_log_level = loud\n",
            "LOGGER/default_log_level",
        ),
    ] {
        let e = fail(text);
        assert!(
            matches!(e, ConfigError::InvalidValue { .. }),
            "{text:?}: {e:?}"
        );
        assert_names(&e, 2, &[key]);
    }
    let e = fail("[SUBGROUP/X]\nrdmc_send_algorithm = fast_send\n");
    assert_names(
        &e,
        2,
        &[
            "fast_send",
            "binomial_send|chain_send|sequential_send|tree_send",
        ],
    );
}

#[test]
fn ports_out_of_range() {
    for (text, key) in [
        ("[DERECHO]\ngms_port = 0\n", "DERECHO/gms_port"),
        ("[DERECHO]\nsst_port = 65536\n", "DERECHO/sst_port"),
        (
            "[DERECHO]\nleader_gms_port = 70000\n",
            "DERECHO/contact_port",
        ),
        (
            "[DERECHO]\nrestart_leader_ports = 1, 0\n",
            "DERECHO/restart_leader_ports",
        ),
    ] {
        let e = fail(text);
        assert!(
            matches!(e, ConfigError::OutOfRange { .. }),
            "{text:?}: {e:?}"
        );
        assert_names(&e, 2, &[key, "between 1 and 65535"]);
    }
}

#[test]
fn local_id_must_be_below_max_node_id() {
    let e = fail("[DERECHO]\nmax_node_id = 8\nlocal_id = 8\n");
    assert!(matches!(e, ConfigError::Inconsistent { .. }), "{e:?}");
    assert_names(&e, 3, &["DERECHO/local_id", "max_node_id"]);
}

#[test]
fn reply_sizes_have_a_minimum() {
    let e = fail("[SUBGROUP/DEFAULT]\nmax_reply_payload_size = 127\n");
    assert!(matches!(e, ConfigError::OutOfRange { .. }), "{e:?}");
    assert_names(&e, 2, &["SUBGROUP/DEFAULT/max_reply_payload_size", "128"]);

    let e = fail("[DERECHO]\nmax_p2p_reply_payload_size = 64\n");
    assert!(matches!(e, ConfigError::OutOfRange { .. }), "{e:?}");
    assert_names(&e, 2, &["DERECHO/max_p2p_reply_payload_size", "128"]);

    // A named profile only warns: the 2019 demo uses 100 for a tier that never replies.
    let c = Config::from_ini_str("[SUBGROUP/T]\nmax_reply_payload_size = 100\n", "ok.cfg").unwrap();
    assert_eq!(c.profile("T").unwrap().max_reply_payload_size, 100);
    assert!(c.warnings()[0].contains("ok.cfg:2: `SUBGROUP/T/max_reply_payload_size`"));
}

#[test]
fn zero_windows_and_blocks() {
    for (text, key) in [
        (
            "[SUBGROUP/DEFAULT]\nwindow_size = 0\n",
            "SUBGROUP/DEFAULT/window_size",
        ),
        (
            "[SUBGROUP/BIG]\nblock_size = 0\n",
            "SUBGROUP/BIG/block_size",
        ),
        (
            "[DERECHO]\np2p_window_size = 0\n",
            "DERECHO/p2p_window_size",
        ),
        (
            "[DERECHO]\nwindow_size = 0\n",
            "SUBGROUP/DEFAULT/window_size",
        ),
        (
            "[DERECHO]\nview_change_setup_timeout_ms = 0\n",
            "DERECHO/view_change_setup_timeout_ms",
        ),
    ] {
        let e = fail(text);
        assert!(
            matches!(e, ConfigError::OutOfRange { .. }),
            "{text:?}: {e:?}"
        );
        assert_names(&e, 2, &[key, "at least 1"]);
    }
}

#[test]
fn restart_leader_lists_must_have_the_same_length() {
    let e = fail("[DERECHO]\nrestart_leaders = 10.0.0.1,10.0.0.2\nrestart_leader_ports = 23580\n");
    assert!(matches!(e, ConfigError::Inconsistent { .. }), "{e:?}");
    assert_names(
        &e,
        3,
        &["DERECHO/restart_leader_ports", "2 entries", "has 1"],
    );
}

#[test]
fn json_layout_and_json_layout_file_are_exclusive() {
    let e = fail("[LAYOUT]\njson_layout = '[]'\njson_layout_file = layout.json\n");
    assert!(matches!(e, ConfigError::Inconsistent { .. }), "{e:?}");
    assert_names(&e, 3, &["LAYOUT/json_layout_file", "mutually exclusive"]);
}

#[test]
fn json_layout_must_be_json() {
    let e = fail("[LAYOUT]\njson_layout = '[{\"type_alias\": }]'\n");
    assert!(matches!(e, ConfigError::InvalidJson { .. }), "{e:?}");
    assert_names(
        &e,
        2,
        &["LAYOUT/json_layout", "expected value at line 1 column"],
    );
}

#[test]
fn json_layout_file_must_be_readable_json() {
    let dir = TempDir::new("layout-errors");
    let cfg = dir.write("bad.cfg", "[LAYOUT]\njson_layout_file = missing.json\n");
    let e = ConfigLoader::new()
        .env(no_env)
        .group_file(&cfg)
        .load()
        .unwrap_err();
    assert!(
        matches!(e, ConfigError::LayoutFileUnreadable { .. }),
        "{e:?}"
    );
    assert_names(&e, 2, &["LAYOUT/json_layout_file", "missing.json"]);

    dir.write("broken.json", "[1, 2");
    let cfg = dir.write("bad.cfg", "[LAYOUT]\n\njson_layout_file = broken.json\n");
    let e = ConfigLoader::new()
        .env(no_env)
        .group_file(&cfg)
        .load()
        .unwrap_err();
    assert!(matches!(e, ConfigError::InvalidJson { .. }), "{e:?}");
    assert_names(&e, 3, &["LAYOUT/json_layout_file", "EOF"]);
}

#[test]
fn legacy_and_modern_name_in_one_layer() {
    let e = fail("[DERECHO]\ncontact_ip = 10.0.0.1\nleader_ip = 10.0.0.2\n");
    assert!(matches!(e, ConfigError::AliasConflict { .. }), "{e:?}");
    assert_names(&e, 3, &["DERECHO/leader_ip", "DERECHO/contact_ip"]);

    let e = fail("[SUBGROUP/DEFAULT]\nblock_size = 1\n[DERECHO]\nblock_size = 2\n");
    assert!(matches!(e, ConfigError::AliasConflict { .. }), "{e:?}");
    assert_names(
        &e,
        4,
        &["DERECHO/block_size", "SUBGROUP/DEFAULT/block_size"],
    );

    let e = ConfigLoader::new()
        .env(no_env)
        .cwd(TempDir::new("cli-alias").path())
        .args(["--DERECHO/rpc_port=1", "--DERECHO/state_transfer_port=2"])
        .load()
        .unwrap_err();
    assert!(matches!(e, ConfigError::AliasConflict { .. }), "{e:?}");
    assert!(e.to_string().contains("command line (argument 2)"), "{e}");
}

#[test]
fn command_line_errors_name_the_argument() {
    let dir = TempDir::new("cli-errors");
    let load = |args: &[&str]| {
        ConfigLoader::new()
            .env(no_env)
            .cwd(dir.path())
            .args(args.iter().copied())
            .load()
            .unwrap_err()
    };
    let e = load(&["app-arg", "--DERECHO/local_id=x"]);
    assert!(matches!(e, ConfigError::InvalidValue { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("command line (argument 2)") && msg.contains("DERECHO/local_id"),
        "{msg}"
    );

    let e = load(&["--DERECHO/lcal_id=1"]);
    assert!(matches!(e, ConfigError::UnknownKey { .. }), "{e:?}");
    let e = load(&["--SUBGROUP/a b/window_size=1"]);
    assert!(matches!(e, ConfigError::UnknownSection { .. }), "{e:?}");
}

#[test]
fn duplicate_keys_warn_and_the_later_wins() {
    let c = Config::from_ini_str("[DERECHO]\nlocal_id = 1\nlocal_id = 2\n", "dup.cfg").unwrap();
    assert_eq!(c.derecho.local_id, 2);
    assert!(c.warnings()[0].contains("dup.cfg:3: `DERECHO/local_id` is set again"));
}
