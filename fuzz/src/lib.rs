//! Fuzz targets of the tribes core. The bodies live in [`targets`] so the root crate's
//! `tests/fuzz_corpus.rs` can replay the kept corpus through the very same code.

pub mod targets;
