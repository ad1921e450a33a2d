//! End-to-end tests live in `tests/tests/`: they drive the real `collector` and `pipeline`
//! binaries (built by `cargo test --workspace` next to this crate's test binary).
