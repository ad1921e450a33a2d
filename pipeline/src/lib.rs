//! The clicktrail attribution pipeline (SPEC §4–5): reads hits from the lake, deduplicates
//! them, flags bots, finds each conversion's session within the window and writes the four
//! report tables per date, plus a manifest per run and nightly bookkeeping.
//!
//! Shape: [`read`] lists and scans the hit files a run needs; [`stages`] are pure
//! `LazyFrame` transformations; [`write`] is the only place that materializes (collects)
//! and stores; [`run`] wires them for a date range; [`nightly`] decides which dates are
//! stale and runs them under a lease; [`gen`] builds deterministic synthetic lakes for
//! tests and benchmarks; [`spark`] runs the same rules on Apache Spark (`--engine spark`).

pub mod arrow_out;
pub mod error;
pub mod gen;
pub mod nightly;
pub mod params;
pub mod progress;
pub mod read;
pub mod rules;
pub mod run;
pub mod settle;
pub mod spark;
pub mod stages;
pub mod write;

pub use error::PipelineError;
pub use params::Params;
pub use run::{run, RunSummary};
