//! Load order, discovery, command-line splitting, aliases across layers, inheritance, layouts
//! and round trips.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;

use derecho::config::{
    Config, ConfigError, ConfigLoader, FabricBackend, LogLevel, Origin, RdmcSendAlgorithm,
};

use super::{no_env, TempDir};

fn env_of(pairs: &[(&str, PathBuf)]) -> impl Fn(&str) -> Option<String> + 'static {
    let map: HashMap<String, String> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string_lossy().into_owned()))
        .collect();
    move |name| map.get(name).cloned()
}

#[test]
fn nothing_at_all_gives_the_defaults_and_one_warning() {
    let dir = TempDir::new("empty");
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .load()
        .unwrap();
    assert_eq!(c, Config::default());
    assert_eq!(c.warnings().len(), 1);
    assert!(c.warnings()[0].contains("using built-in defaults"));
    assert_eq!(c.origin("DERECHO/local_id"), Some(&Origin::Defaults));
}

#[test]
fn documented_defaults() {
    let c = Config::default();
    assert_eq!(c.derecho.heartbeat_ms, 100);
    assert_eq!(c.derecho.sst_poll_cq_timeout_ms, 2000);
    assert!(!c.derecho.disable_partitioning_safety);
    assert_eq!(c.derecho.restart_leader_ports, vec![23580]);
    assert_eq!(c.derecho.max_node_id, 1024);
    // The membership bounds keep the values they had before they were configurable.
    let d = &c.derecho;
    assert_eq!(
        [
            d.join_timeout_ms,
            d.join_ack_timeout_ms,
            d.gms_handshake_timeout_ms,
            d.first_view_setup_timeout_ms,
            d.view_change_setup_timeout_ms,
            d.state_transfer_timeout_ms,
            d.resend_timeout_ms,
            d.report_failure_timeout_ms,
            d.leave_timeout_ms,
        ],
        [600_000, 10_000, 5_000, 30_000, 10_000, 120_000, 30_000, 30_000, 2_000]
    );
    assert_eq!(c.rdma.backend, FabricBackend::Tcp);
    assert_eq!(c.rdma.provider, "tcp");
    assert_eq!(c.rdma.domain, "lo");
    assert_eq!(c.pers.max_data_size, 549_755_813_888);
    assert_eq!(c.pers.max_log_entry, 1_048_576);
    assert_eq!(c.logger.log_file_depth, 3);
    assert!(c.logger.log_to_terminal);
    assert_eq!(c.layout.json_layout, None);
    let d = c.profile("DEFAULT").unwrap();
    assert_eq!((d.window_size, d.block_size), (16, 1_048_576));
    assert_eq!(c.raw("RDMA/domain"), Some("lo"));
    assert_eq!(
        c.raw("SUBGROUP/DEFAULT/rdmc_send_algorithm"),
        Some("binomial_send")
    );
    assert_eq!(c.raw("DERECHO/nothing"), None);
}

#[test]
fn layers_apply_in_order_defaults_group_node_args() {
    let dir = TempDir::new("order");
    let group = dir.write(
        "group.cfg",
        "[DERECHO]\nlocal_id = 1\ngms_port = 24000\nheartbeat_ms = 200\n",
    );
    let node = dir.write("node.cfg", "[DERECHO]\nlocal_id = 2\ngms_port = 24001\n");
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .group_file(&group)
        .node_file(&node)
        .args(["--DERECHO/local_id=3"])
        .load()
        .unwrap();
    assert_eq!(c.derecho.local_id, 3);
    assert_eq!(c.derecho.gms_port, 24001);
    assert_eq!(c.derecho.heartbeat_ms, 200);
    assert_eq!(c.derecho.sst_port, 37683);
    assert_eq!(
        c.origin("DERECHO/local_id"),
        Some(&Origin::CommandLine { argument: 1 })
    );
    assert_eq!(c.origin("DERECHO/gms_port"), Some(&Origin::file(&node, 3)));
    assert_eq!(
        c.origin("DERECHO/heartbeat_ms"),
        Some(&Origin::file(&group, 4))
    );
    assert_eq!(c.origin("DERECHO/sst_port"), Some(&Origin::Defaults));
    assert!(c.warnings().is_empty(), "{:?}", c.warnings());
}

#[test]
fn env_vars_name_the_files_and_beat_the_working_directory() {
    let dir = TempDir::new("env");
    dir.write("derecho.cfg", "[DERECHO]\nlocal_id = 7\n");
    dir.write("derecho_node.cfg", "[DERECHO]\ngms_port = 25007\n");
    let group = dir.write("elsewhere/g.cfg", "[DERECHO]\nlocal_id = 1\n");
    let node = dir.write("elsewhere/n.cfg", "[DERECHO]\ngms_port = 25001\n");
    let c = ConfigLoader::new()
        .env(env_of(&[
            ("DERECHO_CONF_FILE", group.clone()),
            ("DERECHO_NODE_CONF_FILE", node),
        ]))
        .cwd(dir.path())
        .load()
        .unwrap();
    assert_eq!((c.derecho.local_id, c.derecho.gms_port), (1, 25001));

    // An explicit file beats the environment.
    let explicit = dir.write("explicit.cfg", "[DERECHO]\nlocal_id = 2\n");
    let c = ConfigLoader::new()
        .env(env_of(&[("DERECHO_CONF_FILE", group)]))
        .cwd(dir.path())
        .group_file("explicit.cfg")
        .load()
        .unwrap();
    assert_eq!(c.derecho.local_id, 2);
    assert_eq!(
        c.origin("DERECHO/local_id"),
        Some(&Origin::file(explicit, 2))
    );
}

#[test]
fn working_directory_files_are_found_when_nothing_is_named() {
    let dir = TempDir::new("cwd");
    dir.write("derecho.cfg", "[DERECHO]\nlocal_id = 7\ngms_port = 1000\n");
    dir.write("derecho_node.cfg", "[DERECHO]\ngms_port = 25007\n");
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .load()
        .unwrap();
    assert_eq!((c.derecho.local_id, c.derecho.gms_port), (7, 25007));
    assert!(c.warnings().is_empty());

    // Only a node file: fine, and no "nothing found" warning.
    let dir = TempDir::new("cwd-node-only");
    dir.write("derecho_node.cfg", "[DERECHO]\nlocal_id = 4\n");
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .load()
        .unwrap();
    assert_eq!(c.derecho.local_id, 4);
    assert!(c.warnings().is_empty());
}

#[test]
fn named_files_must_exist_but_implicit_ones_need_not() {
    let dir = TempDir::new("missing");
    let err = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .group_file("absent.cfg")
        .load()
        .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::FileUnreadable {
            role: "group file",
            ..
        }
    ));
    assert!(err.to_string().contains("absent.cfg"), "{err}");

    let err = ConfigLoader::new()
        .env(env_of(&[(
            "DERECHO_NODE_CONF_FILE",
            dir.path().join("gone.cfg"),
        )]))
        .cwd(dir.path())
        .load()
        .unwrap_err();
    assert!(matches!(
        err,
        ConfigError::FileUnreadable {
            role: "node file",
            ..
        }
    ));
    assert!(err.to_string().contains("$DERECHO_NODE_CONF_FILE"), "{err}");

    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .args(["--DERECHO/local_id=5"])
        .load()
        .unwrap();
    assert_eq!(c.derecho.local_id, 5);
    assert!(
        c.warnings().is_empty(),
        "an override counts as configuration"
    );
}

#[test]
fn args_keep_what_is_not_ours_for_the_application() {
    let dir = TempDir::new("args");
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .extra_sections(["SOSPDEMO"])
        .args([
            "--DERECHO/local_id=3",
            "--verbose",
            "--SUBGROUP/FOO/window_size=5",
            "--other/x=1",
            "--SOSPDEMO/mode=fast",
            "server",
            "--",
            "--DERECHO/local_id=9",
            "--",
            "photo.jpg",
        ])
        .load()
        .unwrap();
    assert_eq!(c.derecho.local_id, 3);
    assert_eq!(c.profile("FOO").unwrap().window_size, 5);
    assert_eq!(c.raw("SOSPDEMO/mode"), Some("fast"));
    assert_eq!(
        c.app_args(),
        [
            "--verbose",
            "--other/x=1",
            "server",
            "--DERECHO/local_id=9",
            "--",
            "photo.jpg"
        ]
    );
}

#[test]
fn application_sections_are_raw_only() {
    let dir = TempDir::new("extra");
    let file = dir.write(
        "derecho.cfg",
        "[DERECHO]\nlocal_id = 1\n[SOSPDEMO]\nfunction_tier = 0:127.0.0.1:28001,1:127.0.0.1:28002\n\
         categorizer_tier = 2-3 \n",
    );
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .extra_sections(["SOSPDEMO"])
        .load()
        .unwrap();
    assert_eq!(
        c.raw("SOSPDEMO/function_tier"),
        Some("0:127.0.0.1:28001,1:127.0.0.1:28002")
    );
    assert_eq!(c.raw("SOSPDEMO/categorizer_tier"), Some("2-3"));
    assert_eq!(
        c.origin("SOSPDEMO/categorizer_tier"),
        Some(&Origin::file(&file, 5))
    );

    // Written back and reloaded with the same section declared, it is equal.
    let copy = TempDir::new("extra-copy");
    copy.write("derecho.cfg", &c.to_ini_string());
    let back = ConfigLoader::new()
        .env(no_env)
        .cwd(copy.path())
        .extra_sections(["SOSPDEMO"])
        .load()
        .unwrap();
    assert_eq!(back, c);
}

#[test]
fn legacy_and_modern_names_in_different_layers_follow_the_load_order() {
    let dir = TempDir::new("alias-layers");
    dir.write(
        "derecho.cfg",
        "[DERECHO]\nleader_ip = 10.0.0.1\nrpc_port = 4000\n",
    );
    dir.write("derecho_node.cfg", "[DERECHO]\ncontact_ip = 10.0.0.2\n");
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .load()
        .unwrap();
    assert_eq!(c.derecho.contact_ip, "10.0.0.2".parse::<IpAddr>().unwrap());
    assert_eq!(c.derecho.state_transfer_port, 4000);
    assert_eq!(c.warnings().len(), 2);
}

#[test]
fn v09_profile_keys_under_derecho_feed_the_default_profile() {
    let c = Config::from_ini_str(
        "[DERECHO]\nmax_payload_size = 2048\nwindow_size = 4\nrdmc_send_algorithm = chain_send\n\
         [SUBGROUP/OTHER]\nblock_size = 4096\n",
        "v09.cfg",
    )
    .unwrap();
    let d = c.profile("DEFAULT").unwrap();
    assert_eq!(
        (d.max_payload_size, d.window_size, d.rdmc_send_algorithm),
        (2048, 4, RdmcSendAlgorithm::Chain)
    );
    let o = c.profile("OTHER").unwrap();
    assert_eq!(
        (o.window_size, o.block_size),
        (4, 4096),
        "inherited from DEFAULT"
    );
    assert_eq!(c.warnings().len(), 3);
    assert!(c.warnings()[0].contains("v0.9 placement of `SUBGROUP/DEFAULT/max_payload_size`"));
}

#[test]
fn named_profiles_inherit_the_final_default_profile() {
    let dir = TempDir::new("inherit");
    dir.write("derecho.cfg", "[SUBGROUP/A]\nmax_payload_size = 99999\n");
    dir.write("derecho_node.cfg", "[SUBGROUP/DEFAULT]\nwindow_size = 7\n");
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .args(["--SUBGROUP/DEFAULT/rdmc_send_algorithm=tree_send"])
        .load()
        .unwrap();
    let a = c.profile("A").unwrap();
    assert_eq!(a.max_payload_size, 99999);
    assert_eq!(a.window_size, 7);
    assert_eq!(a.rdmc_send_algorithm, RdmcSendAlgorithm::Tree);
    assert_eq!(c.raw("SUBGROUP/A/window_size"), Some("7"));
}

#[test]
fn module_log_levels_default_to_the_default_level() {
    let c = Config::from_ini_str(
        "[LOGGER]\ndefault_log_level = WARN\nsst_log_level = trace\n",
        "log.cfg",
    )
    .unwrap();
    assert_eq!(c.logger.default_log_level, LogLevel::Warn);
    assert_eq!(c.logger.sst_log_level, LogLevel::Trace);
    assert_eq!(c.logger.rpc_log_level, LogLevel::Warn);
    assert_eq!(c.logger.persistence_log_level, LogLevel::Warn);
    assert_eq!(c.raw("LOGGER/viewmanager_log_level"), Some("warn"));
}

#[test]
fn booleans_accept_the_documented_spellings() {
    let c = Config::from_ini_str(
        "[DERECHO]\nenable_backup_restart_leaders = Yes\ndisable_partitioning_safety = 1\n\
         [PERS]\nreset = TRUE\n[LOGGER]\nlog_to_terminal = no\n",
        "b.cfg",
    )
    .unwrap();
    assert!(c.derecho.enable_backup_restart_leaders);
    assert!(c.derecho.disable_partitioning_safety);
    assert!(c.pers.reset);
    assert!(!c.logger.log_to_terminal);
}

const LAYOUT_CFG: &str = "[LAYOUT]
# a layout for two types
json_layout = '
[
    {
        \"type_alias\": \"FunctionTier\",
        \"layout\": [{\"min_nodes_by_shard\": [1], \"max_nodes_by_shard\": [\"1\"],
                     \"delivery_modes_by_shard\": [\"Ordered\"], \"profiles_by_shard\": [\"DEFAULT\"]}]
    },
    {\"type_alias\": \"it''s # not a comment\", \"layout\": []}
]'   # trailing comment
[DERECHO]
local_id = 2
";

#[test]
fn multi_line_quoted_json_layout() {
    let c = Config::from_ini_str(LAYOUT_CFG, "layout.cfg").unwrap();
    let json = c.layout.json_layout.as_ref().unwrap();
    assert_eq!(json[0]["type_alias"], "FunctionTier");
    assert_eq!(json[0]["layout"][0]["max_nodes_by_shard"][0], "1");
    assert_eq!(json[1]["type_alias"], "it's # not a comment");
    assert_eq!(c.layout.json_layout_file, None);
    assert_eq!(c.derecho.local_id, 2);
    assert_eq!(
        c.origin("DERECHO/local_id"),
        Some(&Origin::file("layout.cfg", 13))
    );
}

#[test]
fn json_layout_file_is_read_relative_to_its_config_file() {
    let dir = TempDir::new("layout-file");
    dir.write(
        "cfg/layout.json",
        "[{\"type_alias\": \"T\", \"layout\": []}]",
    );
    let cfg = dir.write(
        "cfg/derecho.cfg",
        "[LAYOUT]\njson_layout_file = layout.json\n",
    );
    let c = ConfigLoader::new()
        .env(no_env)
        .group_file(&cfg)
        .load()
        .unwrap();
    assert_eq!(c.layout.json_layout.as_ref().unwrap()[0]["type_alias"], "T");
    assert_eq!(
        c.layout.json_layout_file,
        Some(PathBuf::from("layout.json"))
    );
    // Written back next to the same layout file, it reads the same layout again.
    let copy = dir.write("cfg/copy.cfg", &c.to_ini_string());
    let back = ConfigLoader::new()
        .env(no_env)
        .group_file(copy)
        .load()
        .unwrap();
    assert_eq!(back, c);
}

#[test]
fn to_ini_string_round_trips_a_config_with_everything_set() {
    let text = format!(
        "{LAYOUT_CFG}contact_ip = ::1\nrestart_leaders = 10.0.0.1, 10.0.0.2\n\
         restart_leader_ports = 23580,23581\n\
         [RDMA]\nbackend = libfabric\nprovider = verbs\ndomain = mlx5_0\n\
         [PERS]\nfile_path = '/var/lib/derecho logs/#1'\n\
         [LOGGER]\ndefault_log_name = ' padded '\nrpc_log_level = off\n\
         [SUBGROUP/BIG]\nmax_payload_size = 104857600\nnum_shards = 2\nmin_nodes = 1\n"
    );
    let c = Config::from_ini_str(&text, "full.cfg").unwrap();
    assert_eq!(c.rdma.backend, FabricBackend::Libfabric);
    assert_eq!(c.derecho.restart_leaders.len(), 2);
    assert_eq!(c.pers.file_path, PathBuf::from("/var/lib/derecho logs/#1"));
    assert_eq!(c.logger.default_log_name, " padded ");
    let written = c.to_ini_string();
    let back = Config::from_ini_str(&written, "written.cfg").unwrap();
    assert_eq!(back, c, "{written}");
    assert_eq!(back.to_ini_string(), written, "writing is deterministic");

    // A launcher edits the typed values and writes a new file.
    let mut edited = c.clone();
    edited.derecho.local_id = 5;
    edited.subgroups.get_mut("BIG").unwrap().max_nodes = Some(3);
    let again = Config::from_ini_str(&edited.to_ini_string(), "edited.cfg").unwrap();
    assert_eq!(again, edited);
    assert_ne!(again, c);
}

#[test]
fn defaults_round_trip() {
    let c = Config::default();
    let back = Config::from_ini_str(&c.to_ini_string(), "defaults.cfg").unwrap();
    assert_eq!(back, c);
    assert!(back.warnings().is_empty());
}

#[test]
fn pers_keys_choose_durability_and_name_what_is_not_supported() {
    let dir = TempDir::new("pers");
    let group = dir.write(
        "group.cfg",
        "[PERS]\nfile_path = /var/tmp/logs\ndurability = write_ahead\n\
         write_ahead_types = Kv, Counter\ncheckpoint_interval = 500\n\
         private_key_file = key.pem\n\
         [DERECHO]\nenable_backup_restart_leaders = true\n",
    );
    let c = ConfigLoader::new()
        .env(no_env)
        .cwd(dir.path())
        .group_file(&group)
        .load()
        .unwrap();
    assert_eq!(c.pers.durability, derecho::config::Durability::WriteAhead);
    assert_eq!(c.pers.write_ahead_types, vec!["Kv", "Counter"]);
    assert_eq!(c.pers.checkpoint_interval, 500);
    assert_eq!(
        c.pers.durability_of("Other"),
        derecho::config::Durability::WriteAhead
    );
    assert_eq!(c.warnings().len(), 2, "{:?}", c.warnings());
    for (key, says) in [
        (
            "DERECHO/enable_backup_restart_leaders",
            "has no effect without a `restart_leaders` list",
        ),
        (
            "PERS/private_key_file",
            "is not supported and is ignored (logs are not signed without `PERS/signed_logs = true`)",
        ),
    ] {
        assert!(
            c.warnings()
                .iter()
                .any(|w| w.contains(&format!("{key}` {says}"))),
            "{key}: {:?}",
            c.warnings()
        );
    }
    for bad in ["durability = eventually", "checkpoint_interval = 0"] {
        let file = dir.write("bad.cfg", &format!("[PERS]\n{bad}\n"));
        let err = ConfigLoader::new()
            .env(no_env)
            .cwd(dir.path())
            .group_file(&file)
            .load()
            .unwrap_err();
        assert!(err.to_string().contains("PERS/"), "{bad}: {err}");
    }
}

#[test]
fn signed_logs_load_the_private_key_and_name_what_is_wrong_with_it() {
    let dir = TempDir::new("signed");
    let key = dir.path().join("group-key.pem");
    let public = derecho::persist::generate_signing_key(&key).unwrap();
    let load = |text: &str| {
        let file = dir.write("group.cfg", text);
        ConfigLoader::new()
            .env(no_env)
            .cwd(dir.path())
            .group_file(&file)
            .load()
    };
    // Off by default: no key is read, even a missing default one.
    let c = load("[PERS]\nfile_path = logs\n").unwrap();
    assert!(!c.pers.signed_logs);
    assert!(c.signer().unwrap().is_none());

    // On, with a key: no warning, the key loads and round-trips through the INI text.
    let text = format!(
        "[PERS]\nsigned_logs = true\nprivate_key_file = {}\n",
        key.display()
    );
    let c = load(&text).unwrap();
    assert!(c.pers.signed_logs);
    assert_eq!(c.pers.private_key_file, key);
    assert!(
        !c.warnings().iter().any(|w| w.contains("private_key_file")),
        "{:?}",
        c.warnings()
    );
    assert_eq!(c.signer().unwrap().unwrap().public_key(), public);
    let back = Config::from_ini_str(&c.to_ini_string(), "back.cfg").unwrap();
    assert!(back.pers.signed_logs);
    assert_eq!(back.pers.private_key_file, key);

    // A key that is missing, group-readable or not a key: a config error naming the key, its
    // origin and the file; never a panic.
    let missing = dir.path().join("missing.pem");
    let mut bad: Vec<(std::path::PathBuf, &str)> = vec![(missing, "No such file")];
    let garbage = dir.write("garbage.pem", "not a key\n");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&garbage, std::fs::Permissions::from_mode(0o600)).unwrap();
        let shared = dir.path().join("shared.pem");
        derecho::persist::generate_signing_key(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o644)).unwrap();
        bad.push((shared, "chmod 600"));
    }
    bad.push((garbage, "PKCS#8"));
    for (path, says) in bad {
        let text = format!(
            "[PERS]\nsigned_logs = true\nprivate_key_file = {}\n",
            path.display()
        );
        let c = load(&text).unwrap();
        let err = c.signer().unwrap_err();
        assert!(matches!(err, ConfigError::SigningKey { .. }), "{err:?}");
        let msg = err.to_string();
        for part in [
            "PERS/private_key_file",
            "group.cfg:3",
            &path.display().to_string(),
            says,
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        assert!(err.origin().is_some());
    }

    // Signing without a key file at all is inconsistent at load time.
    let err = load("[PERS]\nsigned_logs = true\nprivate_key_file =\n").unwrap_err();
    assert!(matches!(err, ConfigError::Inconsistent { .. }), "{err:?}");
    assert!(err.to_string().contains("PERS/private_key_file"), "{err}");
    let err = load("[PERS]\nsigned_logs = maybe\n").unwrap_err();
    assert!(err.to_string().contains("PERS/signed_logs"), "{err}");
}
