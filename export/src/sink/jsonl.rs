//! JSON Lines file: one event per line, size-based rotation (`path`, `path.1` ..
//! `path.<keep_files>`), fsync'd before the cursor moves.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::PathBuf;

use serde_json::Value;

use super::SinkError;
use crate::config::JsonlConfig;

#[derive(Debug)]
pub struct JsonlSink {
    path: PathBuf,
    max_file_bytes: u64,
    keep_files: u32,
    file: Option<(File, u64)>,
}

fn rotated(path: &std::path::Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// A crash mid-write can leave a last line without its newline; its event was not
/// committed and comes again, so the fragment is cut off. Returns the file's length.
fn drop_torn_line(file: &File) -> std::io::Result<u64> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let len = file.metadata()?.len();
    if len == 0 {
        return Ok(0);
    }
    let mut reader = file;
    let mut end = len;
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let start = end.saturating_sub(chunk.len() as u64);
        let buf = &mut chunk[..(end - start) as usize];
        reader.seek(SeekFrom::Start(start))?;
        reader.read_exact(buf)?;
        if end == len && buf.last() == Some(&b'\n') {
            return Ok(len);
        }
        if let Some(i) = buf.iter().rposition(|&b| b == b'\n') {
            let keep = start + i as u64 + 1;
            tracing::warn!(
                cut = len - keep,
                "export jsonl: torn last line after a crash, cut off"
            );
            file.set_len(keep)?;
            return Ok(keep);
        }
        if start == 0 {
            file.set_len(0)?;
            return Ok(0);
        }
        end = start;
    }
}

impl JsonlSink {
    pub fn new(config: &JsonlConfig) -> Result<Self, SinkError> {
        Ok(Self {
            path: config.path.clone(),
            max_file_bytes: config.max_file_bytes,
            keep_files: config.keep_files,
            file: None,
        })
    }

    fn open(&mut self) -> std::io::Result<&mut (File, u64)> {
        if self.file.is_none() {
            if let Some(parent) = self.path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)?;
            }
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .read(true)
                .open(&self.path)?;
            let len = drop_torn_line(&file)?;
            self.file = Some((file, len));
        }
        Ok(self.file.as_mut().expect("opened"))
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some((file, _)) = self.file.take() {
            file.sync_all()?;
        }
        if self.keep_files == 0 {
            return std::fs::remove_file(&self.path);
        }
        let _ = std::fs::remove_file(rotated(&self.path, self.keep_files));
        for n in (1..self.keep_files).rev() {
            let from = rotated(&self.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, n + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))
    }

    pub fn deliver(&mut self, rendered: &[Value]) -> Result<(), SinkError> {
        let mut lines = Vec::new();
        for value in rendered {
            let mut line = serde_json::to_vec(value).expect("JSON values serialize");
            line.push(b'\n');
            lines.push(line);
        }
        let max = self.max_file_bytes;
        let result = (|| {
            for line in &lines {
                let (_, len) = self.open()?;
                if *len > 0 && *len + line.len() as u64 > max {
                    self.rotate()?;
                }
                let (file, len) = self.open()?;
                file.write_all(line)?;
                *len += line.len() as u64;
            }
            let (file, _) = self.open()?;
            file.sync_data()
        })();
        result.map_err(|err| {
            self.file = None;
            SinkError::Retry(format!("{}: {err}", self.path.display()))
        })
    }
}
