//! The 2019 demo's configs (legacy key names) and our rewritten test-configs.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use derecho::config::{
    Config, ConfigLoader, FabricBackend, LogLevel, RdmcSendAlgorithm, SubgroupProfile,
};

use super::{fixture, no_env, test_config};

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// (shards, min nodes, max nodes) of a profile.
type Shards = (u32, u32, u32);

/// (folder, nodes, FUNCTION_TIER shards, CATEGORIZER_TIER shards).
const CLUSTERS: &[(&str, u32, Shards, Shards)] = &[
    ("test-2-nodes", 2, (1, 1, 1), (1, 1, 1)),
    ("test-4-nodes", 4, (1, 2, 2), (1, 2, 2)),
    ("test-6-nodes", 6, (1, 2, 2), (2, 2, 2)),
];

/// Loads the node folder as a node would: `./derecho.cfg` in its working directory.
fn load_node_dir(dir: &Path) -> Config {
    ConfigLoader::new()
        .env(no_env)
        .cwd(dir)
        .load()
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn shards(p: &SubgroupProfile) -> Shards {
    (
        p.num_shards.unwrap(),
        p.min_nodes.unwrap(),
        p.max_nodes.unwrap(),
    )
}

#[test]
fn demo_2019_configs_parse_with_expected_values() {
    for &(folder, nodes, ft, cat) in CLUSTERS {
        for i in 0..nodes {
            let dir = fixture(&format!("sospdemo-2019/{folder}/n{i}"));
            let c = load_node_dir(&dir);
            let d = &c.derecho;
            assert_eq!(d.contact_ip, LOCALHOST);
            assert_eq!(d.contact_port, 23580);
            assert_eq!(d.local_id, i);
            assert_eq!(d.local_ip, LOCALHOST);
            let port = |base: u32| u16::try_from(base + i).unwrap();
            assert_eq!(d.gms_port, port(23580));
            assert_eq!(d.state_transfer_port, port(28366));
            assert_eq!(d.sst_port, port(37683));
            assert_eq!(d.rdmc_port, port(31675));
            assert_eq!(d.external_port, 32645, "not in the 2019 files: default");
            let slow_poll = folder == "test-6-nodes" && i >= 4;
            assert_eq!(
                d.sst_poll_cq_timeout_ms,
                if slow_poll { 100 } else { 10000 }
            );
            assert_eq!(d.heartbeat_ms, 100, "timeout_ms is ignored");
            assert!(!d.disable_partitioning_safety);
            assert_eq!(d.max_p2p_request_payload_size, 104_857_600);
            assert_eq!(d.max_p2p_reply_payload_size, 131_072);
            assert_eq!(d.p2p_window_size, 1);

            let default = c.profile("DEFAULT").unwrap();
            assert_eq!(default.max_payload_size, 1_048_576);
            assert_eq!(default.max_reply_payload_size, 10240, "built-in default");
            assert_eq!(default.max_smc_payload_size, 10240);
            assert_eq!(default.block_size, 1_048_576);
            assert_eq!(default.window_size, 3);
            assert_eq!(default.rdmc_send_algorithm, RdmcSendAlgorithm::Binomial);
            assert_eq!(default.num_shards, None);

            let f = c.profile("FUNCTION_TIER").unwrap();
            assert_eq!(
                (
                    f.max_payload_size,
                    f.max_smc_payload_size,
                    f.max_reply_payload_size,
                    f.block_size,
                    f.window_size
                ),
                (100, 100, 100, 100, 3)
            );
            assert_eq!(shards(f), ft, "{folder}/n{i}");
            let k = c.profile("CATEGORIZER_TIER").unwrap();
            assert_eq!(k.max_payload_size, 104_857_600);
            assert_eq!(k.max_smc_payload_size, 10240);
            assert_eq!(k.max_reply_payload_size, 131_072);
            assert_eq!(k.block_size, 1_048_576);
            assert_eq!(k.window_size, 3);
            assert_eq!(shards(k), cat, "{folder}/n{i}");
            assert_eq!(c.subgroups.len(), 3);

            assert_eq!(c.rdma.backend, FabricBackend::Tcp);
            assert_eq!(c.rdma.provider, "sockets");
            assert_eq!(c.rdma.domain, "lo");
            assert_eq!((c.rdma.tx_depth, c.rdma.rx_depth), (256, 256));
            assert_eq!(c.pers.file_path, Path::new(".plog"));
            assert_eq!(c.pers.ramdisk_path, Path::new("/dev/shm/volatile_t"));
            assert!(!c.pers.reset);
            assert_eq!(c.logger.default_log_name, "derecho_debug");
            assert_eq!(c.logger.default_log_level, LogLevel::Info);
            assert_eq!(c.logger.viewmanager_log_level, LogLevel::Info);

            assert_eq!(c.raw("DERECHO/leader_ip"), Some("127.0.0.1"));
            assert_eq!(c.raw("DERECHO/contact_port"), Some("23580"));
        }
    }
}

#[test]
fn demo_2019_configs_warn_about_every_legacy_key() {
    let c = load_node_dir(&fixture("sospdemo-2019/test-4-nodes/n2"));
    let w = c.warnings();
    let has = |needle: &str| w.iter().any(|m| m.contains(needle));
    assert!(has(
        "`DERECHO/leader_ip` is the 2019 name of `DERECHO/contact_ip`"
    ));
    assert!(has(
        "`DERECHO/leader_gms_port` is the 2019 name of `DERECHO/contact_port`"
    ));
    assert!(has(
        "`DERECHO/rpc_port` is the 2019 name of `DERECHO/state_transfer_port`"
    ));
    assert!(has("`DERECHO/timeout_ms` is no longer used and is ignored"));
    assert!(has("`RDMA/provider = sockets` is deprecated"));
    assert!(has(
        "`SUBGROUP/FUNCTION_TIER/max_reply_payload_size` is 100 bytes"
    ));
    assert_eq!(w.len(), 6, "{w:#?}");
    // Warnings point at the file and line.
    assert!(w[0].contains("n2/derecho.cfg:2:"), "{}", w[0]);
}

#[test]
fn test_configs_parse_cleanly_with_the_roles_shard_settings() {
    for &(folder, nodes, ft, cat) in CLUSTERS {
        for i in 0..nodes {
            let c = load_node_dir(&test_config(&format!("{folder}/n{i}")));
            assert!(c.warnings().is_empty(), "{folder}/n{i}: {:?}", c.warnings());
            assert_eq!(c.derecho.local_id, i);
            assert_eq!(
                u32::from(c.derecho.external_port),
                32645 + i,
                "{folder}/n{i}"
            );
            assert_eq!(c.rdma.backend, FabricBackend::Tcp);
            assert!(!c.derecho.disable_partitioning_safety);
            assert_eq!(shards(c.profile("FUNCTION_TIER").unwrap()), ft);
            assert_eq!(shards(c.profile("CATEGORIZER_TIER").unwrap()), cat);
        }
    }
}

/// Our rewritten configs keep every value of the 2019 ones, apart from the listed changes.
#[test]
fn test_configs_match_the_2019_demo_apart_from_deliberate_changes() {
    for &(folder, nodes, _, _) in CLUSTERS {
        for i in 0..nodes {
            let ours = load_node_dir(&test_config(&format!("{folder}/n{i}")));
            let mut old = load_node_dir(&fixture(&format!("sospdemo-2019/{folder}/n{i}")));
            old.rdma.provider = "tcp".to_string();
            old.derecho.external_port = u16::try_from(32645 + i).unwrap();
            old.derecho.sst_poll_cq_timeout_ms = 2000;
            old.subgroups
                .get_mut("FUNCTION_TIER")
                .unwrap()
                .max_reply_payload_size = 128;
            assert_eq!(ours, old, "{folder}/n{i}");
        }
    }
}

#[test]
fn test_configs_round_trip() {
    let c = load_node_dir(&test_config("test-6-nodes/n5"));
    let text = c.to_ini_string();
    let back = Config::from_ini_str(&text, "written.cfg").unwrap();
    assert_eq!(back, c);
    assert!(back.warnings().is_empty());
}
