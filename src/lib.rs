//! Root package of the habitd workspace: it holds only the end-to-end tests under `tests/` and
//! the benchmarks under `benches/`. The product lives in the member crates.
