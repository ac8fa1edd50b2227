//! The `jsonl` sink's keys.

use std::ops::Range;
use std::path::PathBuf;

use belay_config_file::Source;

use super::{ConfigError, RawSink};

const DEFAULT_MAX_FILE_BYTES: u64 = 100 << 20;

/// A JSON Lines file, rotated by size.
#[derive(Debug, Clone)]
pub struct JsonlConfig {
    pub path: PathBuf,
    pub max_file_bytes: u64,
    pub keep_files: u32,
}

pub(super) fn config(
    source: &Source<'_>,
    sink_span: Range<usize>,
    sink: RawSink,
) -> Result<JsonlConfig, ConfigError> {
    let path = sink
        .path
        .ok_or_else(|| source.at(sink_span, "path: missing"))?
        .into_inner();
    let keep_files = sink.keep_files.map_or(5, |k| k.into_inner());
    Ok(JsonlConfig {
        path,
        max_file_bytes: sink
            .max_file_bytes
            .map_or(DEFAULT_MAX_FILE_BYTES, |v| v.into_inner())
            .max(1024),
        keep_files,
    })
}
