//! Policies read from a [`Config`]: profile-driven shard sizes (`[SUBGROUP/<P>] num_shards,
//! min_nodes, max_nodes`, what the sospdemo uses), the `[LAYOUT]` JSON layout, and a check
//! that every profile a policy names exists.

use super::{LayoutError, LayoutPolicy, Mode, PolicyLocation, ShardPolicy, SubgroupPolicy};
use crate::config::{Config, SubgroupProfile};

/// The profile called `name`, or an error that suggests a name differing only in case.
fn profile<'c>(
    config: &'c Config,
    name: &str,
    at: Option<&PolicyLocation>,
) -> Result<&'c SubgroupProfile, LayoutError> {
    config.profile(name).ok_or_else(|| {
        let hint = config
            .subgroups
            .keys()
            .find(|k| k.eq_ignore_ascii_case(name))
            .map(|k| format!(" (did you mean `{k}`? profile names are case-sensitive)"))
            .unwrap_or_default();
        LayoutError::Profile {
            profile: name.to_string(),
            at: at.cloned(),
            problem: format!("no such section in the configuration{hint}"),
        }
    })
}

/// One of the optional size keys of a profile, or an error naming it.
fn size_key(name: &str, key: &str, value: Option<u32>) -> Result<usize, LayoutError> {
    let missing = || LayoutError::Profile {
        profile: name.to_string(),
        at: None,
        problem: format!("`{key}` is not set, and a profile-driven layout needs it"),
    };
    let n = value.ok_or_else(missing)?;
    usize::try_from(n).map_err(|_| LayoutError::Profile {
        profile: name.to_string(),
        at: None,
        problem: format!("`{key}` = {n} does not fit this machine"),
    })
}

/// Checks what the policy constructors would otherwise leave to [`LayoutPolicy::validate`], so
/// the error names the profile.
fn check_sizes(name: &str, min_nodes: usize, max_nodes: usize) -> Result<(), LayoutError> {
    let problem = if max_nodes == 0 {
        "`max_nodes` must be at least 1".to_string()
    } else if min_nodes > max_nodes {
        format!("`min_nodes` = {min_nodes} is above `max_nodes` = {max_nodes}")
    } else {
        return Ok(());
    };
    Err(LayoutError::Profile {
        profile: name.to_string(),
        at: None,
        problem,
    })
}

impl SubgroupPolicy {
    /// `num_shards` ordered shards of `min_nodes..=max_nodes` members, all three read from
    /// `[SUBGROUP/<profile>]`, every shard using that profile (the original's
    /// `flexible_even_shards("PROFILE")`). Fails if the profile is missing, lacks one of the
    /// keys, has `num_shards = 0`, `max_nodes = 0` or `min_nodes > max_nodes`.
    pub fn flexible_even_shards_from_profile(
        config: &Config,
        profile_name: &str,
    ) -> Result<SubgroupPolicy, LayoutError> {
        let p = profile(config, profile_name, None)?;
        let num_shards = size_key(profile_name, "num_shards", p.num_shards)?;
        let min_nodes = size_key(profile_name, "min_nodes", p.min_nodes)?;
        let max_nodes = size_key(profile_name, "max_nodes", p.max_nodes)?;
        if num_shards == 0 {
            return Err(LayoutError::Profile {
                profile: profile_name.to_string(),
                at: None,
                problem: "`num_shards` must be at least 1".to_string(),
            });
        }
        check_sizes(profile_name, min_nodes, max_nodes)?;
        Ok(
            SubgroupPolicy::flexible_even(num_shards, min_nodes, max_nodes)
                .with_profile(profile_name),
        )
    }

    /// One shard per `(profile, mode)` pair, each sized by its profile's `min_nodes` and
    /// `max_nodes` (the original's `custom_shard_policy`).
    pub fn shards_from_profiles(
        config: &Config,
        shards: &[(&str, Mode)],
    ) -> Result<SubgroupPolicy, LayoutError> {
        let shards = shards
            .iter()
            .map(|&(name, mode)| {
                let p = profile(config, name, None)?;
                let min_nodes = size_key(name, "min_nodes", p.min_nodes)?;
                let max_nodes = size_key(name, "max_nodes", p.max_nodes)?;
                check_sizes(name, min_nodes, max_nodes)?;
                Ok(ShardPolicy::new(min_nodes, max_nodes)
                    .with_mode(mode)
                    .with_profile(name))
            })
            .collect::<Result<Vec<_>, LayoutError>>()?;
        Ok(SubgroupPolicy::by_shard(shards))
    }
}

impl LayoutPolicy {
    /// The `[LAYOUT]` JSON layout of `config` (inline or from its file), applied to the group's
    /// types `type_names` in declaration order, as the original's `make_subgroup_allocator`.
    /// Fails if no layout is configured, if the array length differs from the number of types,
    /// or as [`from_json`](Self::from_json) does.
    pub fn from_config(config: &Config, type_names: &[&str]) -> Result<LayoutPolicy, LayoutError> {
        let doc = config
            .layout
            .json_layout
            .as_ref()
            .ok_or(LayoutError::NoJsonLayout)?;
        LayoutPolicy::from_json(doc)?.with_type_names(type_names)
    }

    /// Renames the types to `names`, in order; the count must match. The group's declared
    /// names win over JSON aliases (the original ignores `type_alias` too); a differing alias is
    /// logged, since it often means two entries are swapped.
    pub fn with_type_names(mut self, names: &[&str]) -> Result<LayoutPolicy, LayoutError> {
        if names.len() != self.types.len() {
            return Err(LayoutError::TypeCount {
                expected: names.len(),
                found: self.types.len(),
            });
        }
        for (t, (ty, &name)) in self.types.iter_mut().zip(names).enumerate() {
            if ty.name != name && ty.name != format!("type{t}") {
                tracing::warn!(
                    "layout type {t}: alias `{}` is applied to the group's type `{name}`",
                    ty.name
                );
            }
            ty.name = name.to_string();
        }
        self.validate()?;
        Ok(self)
    }

    /// Checks that every profile a shard names is a `[SUBGROUP/<profile>]` of `config`.
    pub fn check_profiles(&self, config: &Config) -> Result<(), LayoutError> {
        for (at, shard) in self.shards() {
            profile(config, &shard.profile, Some(&at))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::layout::TypePolicy;

    const CFG: &str = "
[SUBGROUP/TIER]
num_shards = 2
min_nodes = 1
max_nodes = 3
[SUBGROUP/NO_SHARDS]
min_nodes = 1
max_nodes = 1
[SUBGROUP/UPSIDE_DOWN]
num_shards = 1
min_nodes = 4
max_nodes = 2
";

    fn config() -> Config {
        Config::from_ini_str(CFG, "test.cfg").unwrap()
    }

    #[test]
    fn reads_the_three_keys() {
        let sg = SubgroupPolicy::flexible_even_shards_from_profile(&config(), "TIER").unwrap();
        assert_eq!(
            sg,
            SubgroupPolicy::flexible_even(2, 1, 3).with_profile("TIER")
        );
    }

    #[test]
    fn clear_errors() {
        let c = config();
        let msg = |name: &str| {
            SubgroupPolicy::flexible_even_shards_from_profile(&c, name)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            msg("NO_SHARDS"),
            "profile `[SUBGROUP/NO_SHARDS]`: `num_shards` is not set, and a profile-driven \
             layout needs it"
        );
        assert!(msg("UPSIDE_DOWN").contains("`min_nodes` = 4 is above `max_nodes` = 2"));
        assert!(msg("tier").contains("did you mean `TIER`?"));
        assert!(msg("DEFAULT").contains("`num_shards` is not set"));
    }

    #[test]
    fn shards_from_profiles_and_profile_check() {
        let c = config();
        let sg = SubgroupPolicy::shards_from_profiles(
            &c,
            &[("TIER", Mode::Raw), ("NO_SHARDS", Mode::Ordered)],
        )
        .unwrap();
        assert_eq!(
            sg.shards[0],
            ShardPolicy::new(1, 3)
                .with_mode(Mode::Raw)
                .with_profile("TIER")
        );
        assert_eq!(
            sg.shards[1],
            ShardPolicy::new(1, 1).with_profile("NO_SHARDS")
        );
        let p = LayoutPolicy::new().with_type(TypePolicy::one("T", sg.clone()));
        p.check_profiles(&c).unwrap();
        let bad = LayoutPolicy::new().with_type(TypePolicy::one("T", sg.with_profile("MISSING")));
        let e = bad.check_profiles(&c).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("profile `[SUBGROUP/MISSING]` (at type 0 `T`, subgroup 0, shard 0)"),
            "{e}"
        );
    }

    #[test]
    fn type_names_replace_aliases() {
        let p = LayoutPolicy::from_json_str(
            r#"[{"type_alias": "X",
                  "layout": [{"min_nodes_by_shard": [1], "max_nodes_by_shard": [1]}]},
                {"layout": []}]"#,
        )
        .unwrap();
        let named = p.clone().with_type_names(&["Foo", "Bar"]).unwrap();
        assert_eq!(named.types[0].name, "Foo");
        assert_eq!(named.types[1].name, "Bar");
        assert_eq!(
            p.with_type_names(&["Foo"]).unwrap_err(),
            LayoutError::TypeCount {
                expected: 1,
                found: 2
            }
        );
        assert_eq!(
            LayoutPolicy::from_config(&config(), &["Foo"]).unwrap_err(),
            LayoutError::NoJsonLayout
        );
    }
}
