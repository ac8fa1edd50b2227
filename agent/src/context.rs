//! Placeholder: request context (being written).
