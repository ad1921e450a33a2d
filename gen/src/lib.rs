//! Traffic for clicktrail. [`http`] drives simulated customers and brand servers through a
//! running collector and records the ground truth: for every conversion report it sends,
//! the status and member the attribution rules (SPEC §4) must give it.

pub mod http;
