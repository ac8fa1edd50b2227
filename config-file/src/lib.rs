//! The TOML configuration files of belay (the server's `--auth-config`, the exporter's
//! `--export-config`): read, parsed and validated with every problem reported as
//! `FILE:LINE:COL: problem`, so an operator goes straight to the offending key.
//!
//! A loader reads the file with [`read`], wraps it in a [`Source`], deserializes with
//! [`Source::parse`] (keep `toml::Spanned` fields for what later checks will point at)
//! and reports its own checks with [`Source::at`] or [`Source::whole`].
//!
//! [`check_url`] is the rule for URLs that configuration (or `belay login --issuer`)
//! names and keys are fetched from: https, or plain http to a loopback host.

mod url;

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

pub use url::check_url;

/// A configuration problem, located in its file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{}: {err}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        err: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", path.display())]
    At {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {message}", path.display())]
    Whole { path: PathBuf, message: String },
}

/// The text of `path`; an error that names the file when it cannot be read.
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|err| ConfigError::Read {
        path: path.to_owned(),
        err,
    })
}

/// A configuration file's text and the path its errors name.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    path: &'a Path,
    text: &'a str,
}

impl<'a> Source<'a> {
    pub fn new(path: &'a Path, text: &'a str) -> Self {
        Self { path, text }
    }

    /// Deserializes the whole file; a syntax or type error points at where toml found it.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        toml::from_str(self.text).map_err(|err| match err.span() {
            Some(span) => self.at(span, err.message()),
            None => self.whole(err.message()),
        })
    }

    /// A problem at byte `span` of the text (a `toml::Spanned` value's span).
    pub fn at(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        let (line, column) = line_column(self.text, span.start);
        ConfigError::At {
            path: self.path.to_owned(),
            line,
            column,
            message: message.into(),
        }
    }

    /// A problem with the file as a whole (something missing rather than something wrong).
    pub fn whole(&self, message: impl Into<String>) -> ConfigError {
        ConfigError::Whole {
            path: self.path.to_owned(),
            message: message.into(),
        }
    }
}

/// 1-based line and column of byte `offset`. The column counts characters, not bytes, as
/// an editor's cursor does; an offset past the end is the end.
pub fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

#[cfg(test)]
mod tests;
