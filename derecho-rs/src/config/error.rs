//! Where a configuration value came from, and what can be wrong with one.

use std::fmt;
use std::path::PathBuf;

/// The place a configuration value (or a syntax error) comes from.
///
/// Displayed as `path:line`, `command line (argument N)` or `defaults`, so every error message
/// tells the user where to look.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The built-in default table.
    Defaults,
    /// A line of a configuration file (or of a text given to [`Config::from_ini_str`]).
    ///
    /// [`Config::from_ini_str`]: super::Config::from_ini_str
    File {
        /// The file's path as it was given (or the origin name of an in-memory text).
        path: PathBuf,
        /// 1-based line number; for a multi-line quoted value, the line where it starts.
        line: u32,
    },
    /// A `--SECTION/key=value` command-line override.
    CommandLine {
        /// 1-based position of the argument in the iterator given to
        /// [`ConfigLoader::args`](super::ConfigLoader::args).
        argument: usize,
    },
}

impl Origin {
    /// A file origin.
    pub fn file(path: impl Into<PathBuf>, line: u32) -> Self {
        Origin::File {
            path: path.into(),
            line,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Defaults => f.write_str("defaults"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::CommandLine { argument } => write!(f, "command line (argument {argument})"),
        }
    }
}

/// Everything that can make a configuration unusable.
///
/// Every variant names where the offending value came from ([`Origin`]) and, when there is one,
/// the flat key (`SECTION/key` or `SUBGROUP/NAME/key`). Loading stops at the first error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A line of a configuration file is not valid INI syntax (no `=`, an unterminated quote, a
    /// key before any section header, an empty key, a malformed header).
    #[error("{at}: syntax error: {reason}")]
    Syntax {
        /// File and line of the malformed text.
        at: Origin,
        /// What is wrong with it.
        reason: String,
    },
    /// A section header (or command-line override) names a section nobody owns.
    #[error("{at}: unknown section `[{section}]`{hint}")]
    UnknownSection {
        /// Where the section was named.
        at: Origin,
        /// The section name as written.
        section: String,
        /// Extra advice (may be empty), already formatted with a leading separator.
        hint: String,
    },
    /// A key that its (known) section does not have.
    #[error("{at}: unknown key `{key}`{}", did_you_mean(.suggestion))]
    UnknownKey {
        /// Where the key was set.
        at: Origin,
        /// The full flat key.
        key: String,
        /// A close known key, if there is one.
        suggestion: Option<String>,
    },
    /// A value that does not parse as the key's type (number, boolean, IP address, enum, list).
    #[error("{at}: key `{key}`: invalid value `{value}`: expected {expected}")]
    InvalidValue {
        /// Where the value was set.
        at: Origin,
        /// The full flat key.
        key: String,
        /// The value as written.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A value of the right type outside its allowed range (a port of 0 or above 65535, a
    /// window or block size of 0, a reply size under 128 bytes).
    #[error("{at}: key `{key}`: value `{value}` out of range: {reason}")]
    OutOfRange {
        /// Where the value was set.
        at: Origin,
        /// The full flat key.
        key: String,
        /// The value as written.
        value: String,
        /// The rule it breaks.
        reason: String,
    },
    /// Two keys that are each valid but contradict each other (`local_id >= max_node_id`,
    /// restart leader lists of different lengths, `json_layout` together with
    /// `json_layout_file`).
    #[error("{at}: key `{key}`: {reason}")]
    Inconsistent {
        /// Where the offending (usually the later) value was set.
        at: Origin,
        /// The full flat key.
        key: String,
        /// Which other key it contradicts, and how.
        reason: String,
    },
    /// A legacy key and its modern name were both set in the same file (or both on the command
    /// line), so it is unclear which one is meant.
    #[error("{at}: key `{key}` and its modern name `{modern}` are both set in the same layer")]
    AliasConflict {
        /// Where the second of the two was set.
        at: Origin,
        /// The legacy key as written.
        key: String,
        /// The modern key it stands for.
        modern: String,
    },
    /// The JSON layout is not valid JSON.
    #[error("{at}: key `{key}`: not valid JSON: {message}")]
    InvalidJson {
        /// Where `json_layout` or `json_layout_file` was set.
        at: Origin,
        /// `LAYOUT/json_layout` or `LAYOUT/json_layout_file`.
        key: String,
        /// serde_json's description of the problem.
        message: String,
    },
    /// The file named by `LAYOUT/json_layout_file` could not be read.
    #[error("{at}: key `{key}`: cannot read layout file `{}`: {source}", .path.display())]
    LayoutFileUnreadable {
        /// Where `json_layout_file` was set.
        at: Origin,
        /// `LAYOUT/json_layout_file`.
        key: String,
        /// The path that was tried (after resolving it against the config file's folder).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `PERS/signed_logs` is on and the signing key `PERS/private_key_file` names cannot be
    /// used: missing, unreadable, readable by group or others, or not an Ed25519 PKCS#8 key.
    #[error("{at}: key `{key}`: {source}")]
    SigningKey {
        /// Where `private_key_file` was set (`defaults` for the default path).
        at: Origin,
        /// `PERS/private_key_file`.
        key: String,
        /// What is wrong with the key file (names its path).
        #[source]
        source: derecho_persist::KeyError,
    },
    /// `DERECHO/launcher` names a launcher whose environment is missing or malformed.
    #[error("key `DERECHO/launcher` = {launcher}: environment variable {variable}: {reason}")]
    Launcher {
        /// The launcher named.
        launcher: &'static str,
        /// The variable that is missing or malformed.
        variable: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration file that was named explicitly (by the caller or by an environment
    /// variable) does not exist or cannot be read.
    #[error("cannot read {role} `{}` ({named_by}): {source}", .path.display())]
    FileUnreadable {
        /// `group file` or `node file`.
        role: &'static str,
        /// The path that was tried.
        path: PathBuf,
        /// Who named it: `given to the loader` or `from $VAR`.
        named_by: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

fn did_you_mean(suggestion: &Option<String>) -> String {
    match suggestion {
        Some(s) => format!(" (did you mean `{s}`?)"),
        None => String::new(),
    }
}

impl ConfigError {
    /// Where the error was found, when it is tied to a value or a line.
    pub fn origin(&self) -> Option<&Origin> {
        match self {
            ConfigError::Syntax { at, .. }
            | ConfigError::UnknownSection { at, .. }
            | ConfigError::UnknownKey { at, .. }
            | ConfigError::InvalidValue { at, .. }
            | ConfigError::OutOfRange { at, .. }
            | ConfigError::Inconsistent { at, .. }
            | ConfigError::AliasConflict { at, .. }
            | ConfigError::InvalidJson { at, .. }
            | ConfigError::LayoutFileUnreadable { at, .. }
            | ConfigError::SigningKey { at, .. } => Some(at),
            ConfigError::FileUnreadable { .. } | ConfigError::Launcher { .. } => None,
        }
    }
}
