//! A persistent log's recovery from its files: the first byte picks a segment or the metadata
//! record, the rest replaces it; the other files stay those of a valid log.
#![no_main]

use std::sync::OnceLock;

use derecho_tests::fuzz_targets::LogCorpus;

/// The files of the valid log, written once per process.
fn corpus() -> &'static LogCorpus {
    static LOG: OnceLock<LogCorpus> = OnceLock::new();
    LOG.get_or_init(|| LogCorpus::new().expect("a log in memory is written"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    corpus().log_any_file(data);
});
