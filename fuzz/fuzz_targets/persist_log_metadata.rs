//! The payload of a persistent log's metadata record, framed with a valid checksum so that it
//! reaches the record's decoder; the segments stay those of a valid log.
#![no_main]

use std::sync::OnceLock;

use derecho_tests::fuzz_targets::LogCorpus;

/// The files of the valid log, written once per process.
fn corpus() -> &'static LogCorpus {
    static LOG: OnceLock<LogCorpus> = OnceLock::new();
    LOG.get_or_init(|| LogCorpus::new().expect("a log in memory is written"))
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    corpus().log_metadata(data);
});
