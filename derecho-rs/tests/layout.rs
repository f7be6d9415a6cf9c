//! Integration tests of `derecho::layout`: adequacy, first views by rank order, the sospdemo
//! test-configs, survivors and joiners across views, flat ids with two subgroups per type,
//! overlap, senders, modes, the JSON layout, and a seeded property test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeSet, HashSet};
use std::path::Path;

use derecho::config::{Config, ConfigLoader};
use derecho::layout::{
    allocate, Assignment, LayoutError, LayoutPolicy, Mode, NodeId, Senders, ShardPolicy,
    SubgroupId, SubgroupPolicy, TypePolicy,
};

/// Members of every shard of subgroup `id`.
fn shards(a: &Assignment, id: u32) -> Vec<Vec<NodeId>> {
    a.shards(SubgroupId(id))
        .unwrap()
        .iter()
        .map(|s| s.members().to_vec())
        .collect()
}

fn inadequate(subgroup: u32, shard: usize, have: usize, need: usize) -> LayoutError {
    LayoutError::Inadequate {
        subgroup: SubgroupId(subgroup),
        shard,
        have,
        need,
    }
}

// ---------------------------------------------------------------------------------------------
// The sospdemo layouts (reference §9.8, §9.12)

/// `test-configs/test-<n>-nodes/n0/derecho.cfg`, loaded as the demo loads it.
fn demo_config(n: usize) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../test-configs")
        .join(format!("test-{n}-nodes/n0/derecho.cfg"));
    ConfigLoader::new()
        .env(|_| None)
        .group_file(path)
        .load()
        .unwrap()
}

/// The demo's policy: `Group<FunctionTier, CategorizerTier>` with profile-driven shards.
fn demo_policy(config: &Config) -> LayoutPolicy {
    let front = SubgroupPolicy::flexible_even_shards_from_profile(config, "FUNCTION_TIER").unwrap();
    let back =
        SubgroupPolicy::flexible_even_shards_from_profile(config, "CATEGORIZER_TIER").unwrap();
    let policy = LayoutPolicy::new()
        .with_type(TypePolicy::one("FunctionTier", front))
        .with_type(TypePolicy::one("CategorizerTier", back));
    policy.check_profiles(config).unwrap();
    policy
}

#[test]
fn sospdemo_two_nodes() {
    let policy = demo_policy(&demo_config(2));
    let a = allocate(&policy, &[0, 1], None).unwrap();
    assert_eq!(shards(&a, 0), vec![vec![0]]);
    assert_eq!(shards(&a, 1), vec![vec![1]]);
    assert_eq!(
        a.shard(SubgroupId(0), 0).unwrap().profile(),
        "FUNCTION_TIER"
    );
    assert_eq!(
        a.shard(SubgroupId(1), 0).unwrap().profile(),
        "CATEGORIZER_TIER"
    );
    assert_eq!(
        allocate(&policy, &[0], None).unwrap_err(),
        inadequate(1, 0, 0, 1)
    );
}

#[test]
fn sospdemo_four_nodes() {
    let policy = demo_policy(&demo_config(4));
    let a = allocate(&policy, &[0, 1, 2, 3], None).unwrap();
    assert_eq!(shards(&a, 0), vec![vec![0, 1]]);
    assert_eq!(shards(&a, 1), vec![vec![2, 3]]);
    // §9.12: num_received has 2 + 2 columns, at offsets 0 and 2.
    assert_eq!(a.num_received_offset(SubgroupId(0)), Some(0));
    assert_eq!(a.num_received_offset(SubgroupId(1)), Some(2));
    assert_eq!(a.num_received_size(), 4);
    assert_eq!(
        allocate(&policy, &[0, 1, 2], None).unwrap_err(),
        inadequate(1, 0, 1, 2)
    );
}

#[test]
fn sospdemo_six_nodes() {
    let policy = demo_policy(&demo_config(6));
    let members = [0, 1, 2, 3, 4, 5];
    let a = allocate(&policy, &members, None).unwrap();
    assert_eq!(shards(&a, 0), vec![vec![0, 1]]);
    assert_eq!(shards(&a, 1), vec![vec![2, 3], vec![4, 5]]);
    let categorizer = a.subgroup_id_by_name("CategorizerTier", 0).unwrap();
    assert_eq!(categorizer, SubgroupId(1));
    // A tag t goes to shard t % 2.
    for (tag, node) in [(0usize, 2), (1, 4), (2, 2), (3, 4)] {
        let shard = a.shard(categorizer, tag % 2).unwrap();
        assert_eq!(shard.members()[0], node);
    }
    for node in members {
        assert_eq!(a.shards_of(node).len(), 1, "node {node} has one role");
    }
    assert!(a.unassigned(&members).is_empty());
}

#[test]
fn sospdemo_roles_follow_join_order() {
    // Nodes that reach the leader in another order get roles in that order.
    let policy = demo_policy(&demo_config(6));
    let a = allocate(&policy, &[0, 5, 3, 1, 4, 2], None).unwrap();
    assert_eq!(shards(&a, 0), vec![vec![0, 5]]);
    assert_eq!(shards(&a, 1), vec![vec![3, 1], vec![4, 2]]);
}

#[test]
fn sospdemo_failure_waits_then_a_joiner_fills_the_hole() {
    let policy = demo_policy(&demo_config(6));
    let v0 = [0, 1, 2, 3, 4, 5];
    let a0 = allocate(&policy, &v0, None).unwrap();
    // Node 3 dies: categorizer shard 0 is down to {2}; nobody is free, so the view waits.
    let v1 = [0, 1, 2, 4, 5];
    assert_eq!(
        allocate(&policy, &v1, Some((&a0, &v0))).unwrap_err(),
        inadequate(1, 0, 1, 2)
    );
    // Node 6 joins: it takes node 3's place; everyone else keeps theirs.
    let v2 = [0, 1, 2, 4, 5, 6];
    let a2 = allocate(&policy, &v2, Some((&a0, &v0))).unwrap();
    assert_eq!(shards(&a2, 0), vec![vec![0, 1]]);
    assert_eq!(shards(&a2, 1), vec![vec![2, 6], vec![4, 5]]);
    // Node 0 (the leader, a function-tier node) dies and node 7 joins: 7 joins the front tier.
    let v3 = [1, 2, 4, 5, 6, 7];
    let a3 = allocate(&policy, &v3, Some((&a2, &v2))).unwrap();
    assert_eq!(shards(&a3, 0), vec![vec![1, 7]]);
    assert_eq!(shards(&a3, 1), vec![vec![2, 6], vec![4, 5]]);
}

#[test]
fn sospdemo_layout_as_json_gives_the_same_assignment() {
    let text = r#"
[SUBGROUP/FUNCTION_TIER]
max_reply_payload_size = 128
[SUBGROUP/CATEGORIZER_TIER]
max_payload_size = 104857600
[LAYOUT]
json_layout = '[
  {"type_alias": "FunctionTier", "layout": [{"min_nodes_by_shard": [2], "max_nodes_by_shard": [2],
    "delivery_modes_by_shard": ["Ordered"], "profiles_by_shard": ["FUNCTION_TIER"]}]},
  {"type_alias": "CategorizerTier", "layout": [{"min_nodes_by_shard": ["2", "2"],
    "max_nodes_by_shard": ["2", "2"], "delivery_modes_by_shard": ["Ordered", "Ordered"],
    "profiles_by_shard": ["CATEGORIZER_TIER", "CATEGORIZER_TIER"]}]}]'
"#;
    let config = Config::from_ini_str(text, "derecho.cfg").unwrap();
    let policy = LayoutPolicy::from_config(&config, &["FunctionTier", "CategorizerTier"]).unwrap();
    policy.check_profiles(&config).unwrap();
    let members = [0, 1, 2, 3, 4, 5];
    let from_json = allocate(&policy, &members, None).unwrap();
    let from_profiles = allocate(&demo_policy(&demo_config(6)), &members, None).unwrap();
    assert_eq!(from_json, from_profiles);
}

// ---------------------------------------------------------------------------------------------
// Adequacy and the first view

#[test]
fn exactly_enough_and_one_short() {
    let policy = LayoutPolicy::new()
        .with_type(TypePolicy::one("A", SubgroupPolicy::flexible_even(1, 1, 4)))
        .with_type(TypePolicy::one("B", SubgroupPolicy::fixed_even(3, 2)));
    let enough: Vec<NodeId> = (0..7).collect();
    let a = allocate(&policy, &enough, None).unwrap();
    assert_eq!(shards(&a, 0), vec![vec![0]]);
    assert_eq!(shards(&a, 1), vec![vec![1, 2], vec![3, 4], vec![5, 6]]);
    assert_eq!(
        allocate(&policy, &enough[..6], None).unwrap_err(),
        inadequate(1, 2, 1, 2)
    );
    // Extra nodes go to the first shards that are below their maximum.
    let more: Vec<NodeId> = (0..9).collect();
    let a = allocate(&policy, &more, None).unwrap();
    assert_eq!(shards(&a, 0), vec![vec![0, 1, 2]]);
}

#[test]
fn first_view_follows_rank_not_id() {
    let policy =
        LayoutPolicy::new().with_type(TypePolicy::one("A", SubgroupPolicy::fixed_even(2, 2)));
    let a = allocate(&policy, &[9, 4, 7, 1, 3], None).unwrap();
    assert_eq!(shards(&a, 0), vec![vec![9, 4], vec![7, 1]]);
    assert_eq!(a.unassigned(&[9, 4, 7, 1, 3]), vec![3]);
}

#[test]
fn an_unassigned_survivor_is_used_before_a_joiner() {
    let policy =
        LayoutPolicy::new().with_type(TypePolicy::one("A", SubgroupPolicy::fixed_even(1, 2)));
    let v0 = [0, 1, 2];
    let a0 = allocate(&policy, &v0, None).unwrap();
    assert_eq!(a0.unassigned(&v0), vec![2]);
    let v1 = [1, 2, 3];
    let a1 = allocate(&policy, &v1, Some((&a0, &v0))).unwrap();
    assert_eq!(shards(&a1, 0), vec![vec![1, 2]]);
}

#[test]
fn a_shrunk_shard_keeps_its_survivors_and_regrows_from_joiners() {
    let policy =
        LayoutPolicy::new().with_type(TypePolicy::one("A", SubgroupPolicy::flexible_even(2, 1, 3)));
    let v0 = [0, 1, 2, 3, 4, 5];
    let a0 = allocate(&policy, &v0, None).unwrap();
    assert_eq!(shards(&a0, 0), vec![vec![0, 1, 2], vec![3, 4, 5]]);
    let v1 = [0, 2, 3];
    let a1 = allocate(&policy, &v1, Some((&a0, &v0))).unwrap();
    assert_eq!(shards(&a1, 0), vec![vec![0, 2], vec![3]]);
    let v2 = [0, 2, 3, 10, 11, 12];
    let a2 = allocate(&policy, &v2, Some((&a1, &v1))).unwrap();
    assert_eq!(shards(&a2, 0), vec![vec![0, 2, 10], vec![3, 11, 12]]);
}

// ---------------------------------------------------------------------------------------------
// Flat ids (upstream issue #219), overlap, senders, modes

#[test]
fn two_subgroups_of_one_type_get_distinct_ids_and_offsets() {
    let policy = LayoutPolicy::new()
        .with_type(TypePolicy::identical(
            "Store",
            2,
            SubgroupPolicy::fixed_even(1, 2),
        ))
        .with_type(TypePolicy::one(
            "Log",
            SubgroupPolicy::fixed_even(2, 3).with_senders(Senders::First(1)),
        ));
    let a = allocate(&policy, &(0..10).collect::<Vec<_>>(), None).unwrap();
    assert_eq!(a.num_subgroups(), 3);
    assert_eq!(a.subgroup_id(0, 0), Some(SubgroupId(0)));
    assert_eq!(a.subgroup_id(0, 1), Some(SubgroupId(1)));
    assert_eq!(a.subgroup_id(1, 0), Some(SubgroupId(2)));
    assert_eq!(a.type_of(SubgroupId(1)), Some((0, 1)));
    assert_eq!(shards(&a, 0), vec![vec![0, 1]]);
    assert_eq!(shards(&a, 1), vec![vec![2, 3]]);
    assert_eq!(shards(&a, 2), vec![vec![4, 5, 6], vec![7, 8, 9]]);
    // Store[0] has 2 senders, Store[1] 2, Log 1 per shard.
    assert_eq!(a.num_received_offset(SubgroupId(0)), Some(0));
    assert_eq!(a.num_received_offset(SubgroupId(1)), Some(2));
    assert_eq!(a.num_received_offset(SubgroupId(2)), Some(4));
    assert_eq!(a.num_received_size(), 5);
    assert_eq!(a.shard_of(SubgroupId(1), 3), Some(0));
    assert_eq!(a.shard_of(SubgroupId(0), 3), None);
}

#[test]
fn reserved_ids_make_subgroups_overlap() {
    // The original's layout-with-id-pool.json: Foo reserves 1,2,3 and Bar 2,3,4.
    let json = r#"[
        {"type_alias": "Foo", "layout": [{"min_nodes_by_shard": ["2"], "max_nodes_by_shard": ["2"],
          "reserved_node_ids_by_shard": [["1", "2", "3"]], "delivery_modes_by_shard": ["Ordered"],
          "profiles_by_shard": ["VCS"]}]},
        {"type_alias": "Bar", "layout": [{"min_nodes_by_shard": ["2"], "max_nodes_by_shard": ["2"],
          "reserved_node_ids_by_shard": [["2", "3", "4"]], "delivery_modes_by_shard": ["Ordered"],
          "profiles_by_shard": ["DEFAULT"]}]}]"#;
    let policy = LayoutPolicy::from_json_str(json).unwrap();
    // Reserved members are kept even above the maximum; nodes 0 and 5 fill nothing.
    let v0 = [0, 1, 2, 3, 4, 5];
    let a0 = allocate(&policy, &v0, None).unwrap();
    assert_eq!(shards(&a0, 0), vec![vec![1, 2, 3]]);
    assert_eq!(shards(&a0, 1), vec![vec![2, 3, 4]]);
    assert_eq!(
        a0.shards_of(2),
        vec![(SubgroupId(0), 0), (SubgroupId(1), 0)]
    );
    assert_eq!(a0.unassigned(&v0), vec![0, 5]);
    // Without 3 and 4, Bar has one reserved member; a free node tops it up to its minimum.
    let a = allocate(&policy, &[5, 2, 0, 1], None).unwrap();
    assert_eq!(shards(&a, 0), vec![vec![2, 1]]);
    assert_eq!(shards(&a, 1), vec![vec![2, 5]]);
    // A reserved id that joins later goes straight to its shards.
    let v1 = [0, 1, 2, 4, 5];
    let a1 = allocate(&policy, &v1, Some((&a0, &v0))).unwrap();
    let v2 = [0, 1, 2, 4, 5, 3];
    let a2 = allocate(&policy, &v2, Some((&a1, &v1))).unwrap();
    assert_eq!(shards(&a1, 0), vec![vec![1, 2]]);
    assert_eq!(shards(&a2, 0), vec![vec![1, 2, 3]]);
    assert_eq!(shards(&a2, 1), vec![vec![2, 4, 3]]);
}

#[test]
fn sender_subsets() {
    let policy = LayoutPolicy::new()
        .with_type(TypePolicy::one(
            "One",
            SubgroupPolicy::fixed_even(1, 3).with_senders(Senders::First(1)),
        ))
        .with_type(TypePolicy::one(
            "Listed",
            SubgroupPolicy::flexible_even(1, 2, 3)
                .with_senders(Senders::Listed(BTreeSet::from([4, 6]))),
        ));
    let v0 = [0, 1, 2, 3, 4, 5];
    let a0 = allocate(&policy, &v0, None).unwrap();
    let one = a0.shard(SubgroupId(0), 0).unwrap();
    assert_eq!(one.senders().collect::<Vec<_>>(), vec![0]);
    let listed = a0.shard(SubgroupId(1), 0).unwrap();
    assert_eq!(listed.members(), [3, 4, 5]);
    assert_eq!(listed.is_sender(), [false, true, false]);
    assert_eq!(listed.sender_rank_of(4), Some(0));
    assert_eq!(a0.num_received_offset(SubgroupId(1)), Some(1));
    // The first sender fails: the next member in rank order sends in the next view.
    let v1 = [1, 2, 3, 4, 5, 9];
    let a1 = allocate(&policy, &v1, Some((&a0, &v0))).unwrap();
    let one = a1.shard(SubgroupId(0), 0).unwrap();
    assert_eq!(one.members(), [1, 2, 9]);
    assert_eq!(one.senders().collect::<Vec<_>>(), vec![1]);
    // Node 4 fails: the listed shard has no sender left; it still exists.
    let v2 = [1, 2, 3, 5, 9];
    let a2 = allocate(&policy, &v2, Some((&a1, &v1))).unwrap();
    let listed = a2.shard(SubgroupId(1), 0).unwrap();
    assert_eq!(listed.members(), [3, 5]);
    assert_eq!(listed.num_senders(), 0);
    assert_eq!(a2.num_received_size(), 1);
}

#[test]
fn starred_reserved_ids_are_the_only_senders() {
    let policy = LayoutPolicy::from_json_str(
        r#"[{"layout": [{"min_nodes_by_shard": [3], "max_nodes_by_shard": [3],
              "reserved_node_ids_by_shard": [["*7", "8"]]}]}]"#,
    )
    .unwrap();
    let a = allocate(&policy, &[0, 7, 8, 9], None).unwrap();
    let shard = a.shard(SubgroupId(0), 0).unwrap();
    assert_eq!(shard.members(), [7, 8, 0]);
    assert_eq!(shard.is_sender(), [true, false, false]);
}

#[test]
fn raw_and_ordered_modes() {
    let policy = LayoutPolicy::new().with_type(TypePolicy::one(
        "Mixed",
        SubgroupPolicy::by_shard(vec![
            ShardPolicy::new(1, 1),
            ShardPolicy::new(1, 1)
                .with_mode(Mode::Raw)
                .with_profile("BULK"),
        ]),
    ));
    let a = allocate(&policy, &[0, 1], None).unwrap();
    assert_eq!(a.shard(SubgroupId(0), 0).unwrap().mode(), Mode::Ordered);
    assert_eq!(a.shard(SubgroupId(0), 1).unwrap().mode(), Mode::Raw);
    assert_eq!(a.shard(SubgroupId(0), 1).unwrap().profile(), "BULK");
    let json = LayoutPolicy::from_json_str(
        r#"[{"type_alias": "Mixed", "layout": [{"min_nodes_by_shard": [1, 1],
             "max_nodes_by_shard": [1, 1], "delivery_modes_by_shard": ["Ordered", "Raw"],
             "profiles_by_shard": ["DEFAULT", "BULK"]}]}]"#,
    )
    .unwrap();
    assert_eq!(json, policy);
    // The assignment travels inside the view: the mode survives serialization.
    let text = serde_json::to_string(&a).unwrap();
    assert!(text.contains("\"Raw\""), "{text}");
    assert_eq!(serde_json::from_str::<Assignment>(&text).unwrap(), a);
}

// ---------------------------------------------------------------------------------------------
// JSON layout errors: each names the place and the field

#[test]
fn malformed_json_layouts() {
    // One subgroup of type `Foo` with the given body.
    let sg = |body: &str| format!(r#"[{{"type_alias": "Foo", "layout": [{body}]}}]"#);
    // A valid two-shard subgroup plus one more field.
    let with = |field: &str, value: &str| {
        sg(&format!(
            r#"{{"min_nodes_by_shard": [1, 1], "max_nodes_by_shard": [2, 2], "{field}": {value}}}"#
        ))
    };
    let sizes = |min: &str, max: &str| {
        sg(&format!(
            r#"{{"min_nodes_by_shard": {min}, "max_nodes_by_shard": {max}}}"#
        ))
    };
    const MODES: &str = "delivery_modes_by_shard";
    const RESERVED: &str = "reserved_node_ids_by_shard";
    let cases: Vec<(String, &str)> =
        vec![
        ("{}".into(), "JSON layout: expected an array with one entry per subgroup type"),
        ("[".into(), "JSON layout: not valid JSON"),
        ("[3]".into(), "JSON layout at type 0: expected an object, found a number"),
        (
            r#"[{"layout": [], "typo": 1}]"#.into(),
            "JSON layout at type 0, field `typo`: unknown field",
        ),
        (
            r#"[{"type_alias": 5, "layout": []}]"#.into(),
            "at type 0, field `type_alias`: expected a non-empty string",
        ),
        (r#"[{"type_alias": "Foo"}]"#.into(), "at type 0 `Foo`, field `layout`: missing"),
        (
            r#"[{"type_alias": "Foo", "layout": {}}]"#.into(),
            "at type 0 `Foo`, field `layout`: expected an array",
        ),
        (
            sg(r#"{"max_nodes_by_shard": [1]}"#),
            "at type 0 `Foo`, subgroup 0, field `min_nodes_by_shard`: missing",
        ),
        (
            sizes("[]", "[]"),
            "field `min_nodes_by_shard`: a subgroup needs at least one shard",
        ),
        (
            sg(r#"{"min_nodes_by_shard": [1]}"#),
            "subgroup 0, field `max_nodes_by_shard`: missing",
        ),
        (
            sizes("[1, 1]", "[2]"),
            "subgroup 0, field `max_nodes_by_shard`: expected 2 entries",
        ),
        (
            sizes("1", "[2]"),
            "field `min_nodes_by_shard`: expected an array, found a number",
        ),
        (
            sizes("[1, -1]", "[2, 2]"),
            "subgroup 0, shard 1, field `min_nodes_by_shard`: expected a non-negative integer, \
             found -1",
        ),
        (
            sizes(r#"[1, "x"]"#, "[2, 2]"),
            "shard 1, field `min_nodes_by_shard`: expected a non-negative integer, found \"x\"",
        ),
        (sizes("[1, 1.5]", "[2, 2]"), "shard 1, field `min_nodes_by_shard`"),
        (
            sizes("[3, 1]", "[2, 2]"),
            "shard 0, field `max_nodes_by_shard`: 2 is below the shard's min_nodes 3",
        ),
        (
            sizes("[0]", "[0]"),
            "shard 0, field `max_nodes_by_shard`: must be at least 1",
        ),
        (
            with(MODES, r#"["Ordered"]"#),
            "field `delivery_modes_by_shard`: expected 2 entries",
        ),
        (
            with(MODES, r#"["Ordered", "Unordered"]"#),
            "shard 1, field `delivery_modes_by_shard`: unknown delivery mode \"Unordered\"",
        ),
        (
            with(MODES, r#"["Ordered", 1]"#),
            "shard 1, field `delivery_modes_by_shard`: expected \"Ordered\" or \"Raw\", found a",
        ),
        (
            with("profiles_by_shard", r#"["A", ""]"#),
            "shard 1, field `profiles_by_shard`: expected a non-empty profile name",
        ),
        (
            with(RESERVED, "[[1]]"),
            "field `reserved_node_ids_by_shard`: expected 2 entries",
        ),
        (
            with(RESERVED, "[[1], 2]"),
            "shard 1, field `reserved_node_ids_by_shard`: expected an array of node ids",
        ),
        (
            with(RESERVED, r#"[[1], ["*x"]]"#),
            "shard 1, field `reserved_node_ids_by_shard`: expected a node id such as 3, \"3\" \
             or \"*3\", found \"*x\"",
        ),
        (
            with(RESERVED, "[[1], [4294967296]]"),
            "shard 1, field `reserved_node_ids_by_shard`: expected a node id",
        ),
        (
            with(RESERVED, r#"[[1, 2], ["2"]]"#),
            "shard 1, field `reserved_node_ids_by_shard`: node 2 is also reserved by shard 0 of \
             this subgroup",
        ),
        (
            sg(r#"{"min_nodes_by_shard": [1], "max_nodes_by_shard": [1],
                   "reserved_node_ids_by_shard": [], "reserved_nodes_by_shard": []}"#),
            "field `reserved_nodes_by_shard`: `reserved_node_ids_by_shard` is also given",
        ),
        (
            with("min_node_by_shard", "[1]"),
            "subgroup 0, field `min_node_by_shard`: unknown field",
        ),
        (
            r#"[{"type_alias": "A", "layout": []}, {"type_alias": "A", "layout": []}]"#.into(),
            "at type 1 `A`, field `type_alias`: another type has the same alias",
        ),
    ];
    for (json, expected) in cases {
        let e = LayoutPolicy::from_json_str(&json).unwrap_err();
        assert!(
            matches!(e, LayoutError::Json { .. }),
            "{json}: not a JSON error: {e:?}"
        );
        let message = e.to_string();
        assert!(
            message.contains(expected),
            "{json}\n  gave:     {message}\n  expected: {expected}"
        );
    }
}

#[test]
fn json_errors_carry_structured_places() {
    let e = LayoutPolicy::from_json_str(
        r#"[{"layout": []}, {"type_alias": "Bar", "layout": [{"min_nodes_by_shard": [1],
            "max_nodes_by_shard": [1]}, {"min_nodes_by_shard": [1, 2],
            "max_nodes_by_shard": [1, 1]}]}]"#,
    )
    .unwrap_err();
    let LayoutError::Json { at, field, .. } = e else {
        panic!("{e:?}")
    };
    let at = at.unwrap();
    assert_eq!(
        (at.type_index, at.type_name.as_str(), at.subgroup, at.shard),
        (1, "Bar", Some(1), Some(1))
    );
    assert_eq!(field.as_deref(), Some("max_nodes_by_shard"));
}

#[test]
fn readme_spelling_of_reserved_ids_is_accepted() {
    let policy = LayoutPolicy::from_json_str(
        r#"[{"type_alias": "Foo", "layout": [{"min_nodes_by_shard": [2, 2],
             "max_nodes_by_shard": [3, 3], "reserved_nodes_by_shard": [[1, 2, 3], [4, 5, 6]],
             "delivery_modes_by_shard": ["Ordered", "Ordered"],
             "profiles_by_shard": ["DEFAULT", "DEFAULT"]}]}]"#,
    )
    .unwrap();
    let shards = &policy.types[0].subgroups[0].shards;
    assert_eq!(shards[1].reserved, BTreeSet::from([4, 5, 6]));
}

#[test]
fn layout_from_config_checks_the_type_count() {
    let config = Config::from_ini_str(
        "[LAYOUT]\njson_layout = '[{\"layout\": []}]'\n",
        "derecho.cfg",
    )
    .unwrap();
    assert_eq!(
        LayoutPolicy::from_config(&config, &["A", "B"]).unwrap_err(),
        LayoutError::TypeCount {
            expected: 2,
            found: 1
        }
    );
    let p = LayoutPolicy::from_config(&config, &["A"]).unwrap();
    assert_eq!(p.types[0].name, "A");
    assert!(p.types[0].subgroups.is_empty());
}

// ---------------------------------------------------------------------------------------------
// Property test: seeded, replayable

/// splitmix64: a tiny deterministic generator, so a failing case replays from its seed.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0; the tiny bias does not matter here).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const ID_SPACE: u64 = 24;

fn random_senders(rng: &mut SplitMix) -> Senders {
    match rng.below(4) {
        0 => Senders::First(rng.below(3) as usize),
        1 => Senders::Listed((0..3).map(|_| rng.below(ID_SPACE) as NodeId).collect()),
        _ => Senders::All,
    }
}

fn random_policy(rng: &mut SplitMix) -> LayoutPolicy {
    let mut policy = LayoutPolicy::new();
    for t in 0..1 + rng.below(3) {
        let mut subgroups = Vec::new();
        for _ in 0..1 + rng.below(2) {
            let mut taken = HashSet::new();
            let mut shards = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let min = rng.below(3) as usize;
                let max = (min + rng.below(3) as usize).max(1);
                let mut shard = ShardPolicy::new(min, max)
                    .with_mode(if rng.chance(30) {
                        Mode::Raw
                    } else {
                        Mode::Ordered
                    })
                    .with_senders(random_senders(rng));
                if rng.chance(20) {
                    // Reserved ids are disjoint within a subgroup, may repeat across subgroups.
                    for _ in 0..1 + rng.below(2) {
                        let id = rng.below(ID_SPACE) as NodeId;
                        if taken.insert(id) {
                            shard.reserved.insert(id);
                        }
                    }
                }
                shards.push(shard);
            }
            subgroups.push(SubgroupPolicy::by_shard(shards));
        }
        policy = policy.with_type(TypePolicy::new(format!("T{t}"), subgroups));
    }
    policy
}

fn random_members(rng: &mut SplitMix) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = (0..ID_SPACE as NodeId).collect();
    for i in (1..ids.len()).rev() {
        ids.swap(i, rng.below(i as u64 + 1) as usize);
    }
    ids.truncate(rng.below(16) as usize);
    ids
}

/// Every rule an adequate assignment must satisfy; `previous` is the assignment it followed.
fn check_assignment(
    seed: u64,
    policy: &LayoutPolicy,
    members: &[NodeId],
    previous: Option<&Assignment>,
    a: &Assignment,
) {
    let present: HashSet<NodeId> = members.iter().copied().collect();
    let reserved = policy.all_reserved();
    let mut non_reserved_seen = HashSet::new();
    let mut offset = 0;
    let mut id = 0u32;
    for ty in &policy.types {
        for sg in &ty.subgroups {
            let sid = SubgroupId(id);
            let got = a.shards(sid).unwrap();
            assert_eq!(got.len(), sg.shards.len(), "seed {seed}");
            let mut in_subgroup = HashSet::new();
            for (s, (shard, rule)) in got.iter().zip(&sg.shards).enumerate() {
                // Survivors and present reserved ids are never dropped, even above the maximum.
                let mut inherent: HashSet<NodeId> = previous
                    .and_then(|p| p.shard(sid, s))
                    .map(|p| {
                        p.members()
                            .iter()
                            .copied()
                            .filter(|m| present.contains(m))
                            .collect()
                    })
                    .unwrap_or_default();
                inherent.extend(rule.reserved.iter().filter(|r| present.contains(r)));
                assert!(shard.len() >= rule.min_nodes, "seed {seed}: below min");
                assert!(
                    shard.len() <= rule.max_nodes.max(inherent.len()),
                    "seed {seed}: above max"
                );
                for &m in shard.members() {
                    assert!(present.contains(&m), "seed {seed}: {m} is not a member");
                    assert!(
                        in_subgroup.insert(m),
                        "seed {seed}: {m} twice in a subgroup"
                    );
                    if reserved.contains(&m) {
                        assert!(
                            rule.reserved.contains(&m),
                            "seed {seed}: {m} reserved elsewhere"
                        );
                    } else {
                        assert!(
                            non_reserved_seen.insert(m),
                            "seed {seed}: {m} in two subgroups"
                        );
                    }
                }
                for r in rule.reserved.iter().filter(|r| present.contains(r)) {
                    assert!(shard.contains(*r), "seed {seed}: reserved {r} missing");
                }
                assert_eq!(
                    shard.is_sender(),
                    rule.senders.flags(shard.members()).as_slice(),
                    "seed {seed}"
                );
                assert_eq!(shard.mode(), rule.mode, "seed {seed}");
            }
            assert_eq!(a.num_received_offset(sid), Some(offset), "seed {seed}");
            offset += got.iter().map(|s| s.num_senders()).max().unwrap();
            id += 1;
        }
    }
    assert_eq!(a.num_received_size(), offset, "seed {seed}");
    // Unassigned nodes exist only when every shard is full.
    let unassigned = a.unassigned(members);
    if unassigned.iter().any(|m| !reserved.contains(m)) {
        for (sid, got) in a.subgroups() {
            let (t, g) = a.type_of(sid).unwrap();
            for (shard, rule) in got.iter().zip(&policy.types[t].subgroups[g].shards) {
                assert!(
                    shard.len() >= rule.max_nodes,
                    "seed {seed}: free node left while a shard is below max"
                );
            }
        }
    }
}

#[test]
fn property_allocations_are_sound_and_survivors_stay() {
    let base = 0x5EED_0000u64;
    let mut adequate = 0;
    for case in 0..3000u64 {
        let seed = base + case;
        let mut rng = SplitMix(seed);
        let policy = random_policy(&mut rng);
        let members = random_members(&mut rng);
        let a0 = match allocate(&policy, &members, None) {
            Ok(a) => a,
            Err(e) => {
                assert!(e.is_inadequate(), "seed {seed}: {e}");
                continue;
            }
        };
        adequate += 1;
        check_assignment(seed, &policy, &members, None, &a0);
        // Re-allocating the same view is a fixed point.
        assert_eq!(
            allocate(&policy, &members, Some((&a0, &members))).unwrap(),
            a0,
            "seed {seed}: not a fixed point"
        );
        if members.is_empty() {
            continue;
        }
        // Remove a random node, maybe add a joiner.
        let gone = members[rng.below(members.len() as u64) as usize];
        let mut next: Vec<NodeId> = members.iter().copied().filter(|&m| m != gone).collect();
        if rng.chance(50) {
            if let Some(joiner) = (0..ID_SPACE as NodeId).find(|id| !members.contains(id)) {
                next.push(joiner);
            }
        }
        match allocate(&policy, &next, Some((&a0, &members))) {
            Ok(a1) => {
                check_assignment(seed, &policy, &next, Some(&a0), &a1);
                for (sid, shards) in a0.subgroups() {
                    for (s, shard) in shards.iter().enumerate() {
                        let survivors: Vec<NodeId> = shard
                            .members()
                            .iter()
                            .copied()
                            .filter(|&m| m != gone)
                            .collect();
                        let now = a1.shard(sid, s).unwrap().members();
                        assert_eq!(
                            &now[..survivors.len()],
                            survivors.as_slice(),
                            "seed {seed}: survivors of subgroup {sid} shard {s} moved"
                        );
                    }
                }
            }
            Err(e) => {
                assert!(e.is_inadequate(), "seed {seed}: {e}");
                assert!(
                    a0.is_assigned(gone),
                    "seed {seed}: removing the unassigned node {gone} made the view inadequate"
                );
            }
        }
    }
    assert!(
        adequate > 1000,
        "only {adequate} adequate cases: widen the generator"
    );
}
