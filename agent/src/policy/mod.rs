//! Placeholder: the policy file (being written).
