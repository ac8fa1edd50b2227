//! Placeholder: DNS answers (being written).
