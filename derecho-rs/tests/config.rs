//! Integration tests of `derecho::config`: the 2019 demo's configs, our test-configs, the load
//! order, round trips, and one failing case per validation rule.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "config/errors.rs"]
mod errors;
#[path = "config/loading.rs"]
mod loading;
#[path = "config/sospdemo.rs"]
mod sospdemo;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A directory under the system temp dir, unique to this process and call, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates the directory; `label` makes it recognisable.
    pub fn new(label: &str) -> Self {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!(
            "derecho-config-test-{}-{n}-{label}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `text` to `name` inside the directory and returns the file's path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `derecho-rs/tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

/// `<workspace>/test-configs/<rel>`.
pub fn test_config(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../test-configs")
        .join(rel)
}

/// An environment with nothing in it.
pub fn no_env(_: &str) -> Option<String> {
    None
}
