//! Criterion benchmarks of Boarding (see `benches/`).
