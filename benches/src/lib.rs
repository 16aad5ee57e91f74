//! Benchmarks live in `benches/benches/`; see README.md.
#![deny(missing_docs)]
