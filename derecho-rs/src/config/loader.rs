//! [`ConfigLoader`]: finds the configuration files, reads the command-line overrides and merges
//! the layers in order: built-in defaults < group file < node file < command line.

use std::fmt;
use std::path::{Path, PathBuf};

use super::build::build;
use super::error::{ConfigError, Origin};
use super::ini::parse_ini;
use super::layer::{
    check_section, is_known_section_root, normalize, RawSetting, Settings, Warnings,
};
use super::Config;

/// Environment variable naming the group file.
pub const GROUP_FILE_ENV: &str = "DERECHO_CONF_FILE";
/// Environment variable naming the node file.
pub const NODE_FILE_ENV: &str = "DERECHO_NODE_CONF_FILE";
/// The group file looked for in the working directory when none is named.
pub const DEFAULT_GROUP_FILE: &str = "derecho.cfg";
/// The node file looked for in the working directory when none is named.
pub const DEFAULT_NODE_FILE: &str = "derecho_node.cfg";

type EnvLookup = Box<dyn Fn(&str) -> Option<String>>;

/// Builds a [`Config`] from files, environment and command line.
///
/// ```no_run
/// use derecho::config::ConfigLoader;
/// let config = ConfigLoader::new()
///     .args(std::env::args().skip(1))
///     .extra_sections(["SOSPDEMO"])
///     .load()?;
/// let my_args = config.app_args();
/// # Ok::<(), derecho::config::ConfigError>(())
/// ```
///
/// * Group file: [`group_file`](Self::group_file), else `$DERECHO_CONF_FILE`, else
///   `./derecho.cfg` if it exists.
/// * Node file: [`node_file`](Self::node_file), else `$DERECHO_NODE_CONF_FILE`, else
///   `./derecho_node.cfg` if it exists.
/// * A file named explicitly or by an environment variable must exist; the implicit ones may not.
/// * Command line: `app [derecho options --] app-args`; see [`args`](Self::args).
pub struct ConfigLoader {
    group_file: Option<PathBuf>,
    node_file: Option<PathBuf>,
    env: EnvLookup,
    cwd: PathBuf,
    args: Vec<String>,
    extra_sections: Vec<String>,
}

impl fmt::Debug for ConfigLoader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigLoader")
            .field("group_file", &self.group_file)
            .field("node_file", &self.node_file)
            .field("cwd", &self.cwd)
            .field("args", &self.args)
            .field("extra_sections", &self.extra_sections)
            .finish_non_exhaustive()
    }
}

impl Default for ConfigLoader {
    fn default() -> Self {
        Self::new()
    }
}

/// A file to read, and whether its absence is an error.
struct FileChoice {
    path: PathBuf,
    /// `None` for the implicit file in the working directory; otherwise who named it.
    named_by: Option<String>,
}

impl ConfigLoader {
    /// A loader that reads the process environment and the process working directory, with no
    /// explicit files, no command-line arguments and no application sections.
    pub fn new() -> Self {
        ConfigLoader {
            group_file: None,
            node_file: None,
            env: Box::new(|name| std::env::var(name).ok()),
            cwd: PathBuf::new(),
            args: Vec::new(),
            extra_sections: Vec::new(),
        }
    }

    /// Names the group file explicitly (it must exist).
    pub fn group_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.group_file = Some(path.into());
        self
    }

    /// Names the node file explicitly (it must exist).
    pub fn node_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.node_file = Some(path.into());
        self
    }

    /// Replaces the environment lookup (default: the process environment). Tests inject a
    /// closure here instead of touching process-wide state.
    pub fn env(mut self, lookup: impl Fn(&str) -> Option<String> + 'static) -> Self {
        self.env = Box::new(lookup);
        self
    }

    /// Sets the directory that stands for the working directory: where `./derecho.cfg` and
    /// `./derecho_node.cfg` are looked for, and what relative file names, relative paths from
    /// the environment and relative command-line paths are resolved against. Default: the
    /// process working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = dir.into();
        self
    }

    /// Gives the command-line arguments (without the program name).
    ///
    /// Every argument of the form `--SECTION/key=value` or `--SUBGROUP/NAME/key=value` whose
    /// section is a Derecho section or a declared extra section is an override, applied above
    /// both files. The first `--` ends the Derecho options and is dropped; everything after it,
    /// and every argument before it that is not an override, is left for the application in
    /// [`Config::app_args`], in order. Overrides are checked like file entries when
    /// [`load`](Self::load) runs.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args = args.into_iter().map(Into::into).collect();
        self
    }

    /// Declares sections owned by the application (e.g. `SOSPDEMO`): their keys are accepted
    /// without checking and are only available through [`Config::raw`].
    pub fn extra_sections<I, S>(mut self, sections: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.extra_sections
            .extend(sections.into_iter().map(Into::into));
        self
    }

    /// Reads, merges and validates everything.
    pub fn load(self) -> Result<Config, ConfigError> {
        let mut warnings = Warnings::default();
        let group = self.choose(
            self.group_file.as_deref(),
            GROUP_FILE_ENV,
            DEFAULT_GROUP_FILE,
        );
        let node = self.choose(self.node_file.as_deref(), NODE_FILE_ENV, DEFAULT_NODE_FILE);
        let (overrides, app_args) = self.split_args();
        if group.is_none() && node.is_none() && overrides.is_empty() {
            warnings.push(format!(
                "no configuration file (`{DEFAULT_GROUP_FILE}`, ${GROUP_FILE_ENV}, \
                 `{DEFAULT_NODE_FILE}`, ${NODE_FILE_ENV}) and no command-line override; \
                 using built-in defaults"
            ));
        }
        let mut merged = Settings::new();
        for (role, choice) in [("group file", group), ("node file", node)] {
            let Some(choice) = choice else { continue };
            let text = match std::fs::read_to_string(&choice.path) {
                Ok(text) => text,
                Err(source) => {
                    return Err(ConfigError::FileUnreadable {
                        role,
                        path: choice.path,
                        named_by: choice
                            .named_by
                            .unwrap_or_else(|| "found in the working directory".to_string()),
                        source,
                    })
                }
            };
            merged.extend(file_layer(
                &text,
                &choice.path,
                &self.extra_sections,
                &mut warnings,
            )?);
        }
        merged.extend(normalize(overrides, &self.extra_sections, &mut warnings)?);
        let mut config = build(merged, warnings, &self.cwd, app_args)?;
        super::launcher::apply(&mut config, &*self.env)?;
        Ok(config)
    }

    /// Picks a file: explicit, else from the environment, else the implicit one if it exists.
    fn choose(&self, explicit: Option<&Path>, env_var: &str, implicit: &str) -> Option<FileChoice> {
        if let Some(path) = explicit {
            return Some(FileChoice {
                path: self.cwd.join(path),
                named_by: Some("given to the loader".to_string()),
            });
        }
        if let Some(value) = (self.env)(env_var).filter(|v| !v.is_empty()) {
            return Some(FileChoice {
                path: self.cwd.join(value),
                named_by: Some(format!("from ${env_var}")),
            });
        }
        let path = self.cwd.join(implicit);
        path.is_file().then_some(FileChoice {
            path,
            named_by: None,
        })
    }

    /// Separates Derecho overrides from the application's arguments.
    fn split_args(&self) -> (Vec<RawSetting>, Vec<String>) {
        let mut overrides = Vec::new();
        let mut app = Vec::new();
        let mut separator_seen = false;
        for (index, arg) in self.args.iter().enumerate() {
            if separator_seen {
                app.push(arg.clone());
                continue;
            }
            if arg == "--" {
                separator_seen = true;
                continue;
            }
            match parse_override(arg, &self.extra_sections) {
                Some((section, name, value)) => overrides.push(RawSetting {
                    section,
                    name,
                    value,
                    origin: Origin::CommandLine {
                        argument: index + 1,
                    },
                }),
                None => app.push(arg.clone()),
            }
        }
        (overrides, app)
    }
}

/// Splits `--SECTION/key=value` (or `--SUBGROUP/NAME/key=value`) when the section is ours.
fn parse_override(arg: &str, extra: &[String]) -> Option<(String, String, String)> {
    let body = arg.strip_prefix("--")?;
    let (path, value) = body.split_once('=')?;
    let (section, name) = path.rsplit_once('/')?;
    if !is_known_section_root(section, extra) {
        return None;
    }
    Some((
        section.to_string(),
        name.trim().to_string(),
        value.trim().to_string(),
    ))
}

/// Parses and normalises one file.
pub(crate) fn file_layer(
    text: &str,
    path: &Path,
    extra: &[String],
    warnings: &mut Warnings,
) -> Result<Settings, ConfigError> {
    let doc = parse_ini(text, path)?;
    for (section, line) in &doc.headers {
        check_section(section, extra, &Origin::file(path, *line))?;
    }
    let raw = doc
        .entries
        .into_iter()
        .map(|e| RawSetting {
            section: e.section,
            name: e.name,
            value: e.value,
            origin: Origin::file(path, e.line),
        })
        .collect();
    normalize(raw, extra, warnings)
}
