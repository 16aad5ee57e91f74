//! Benchmarks live in `benches/benches/`; see README.md.
