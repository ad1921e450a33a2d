//! The clicktrail lake contract (`shared/SPEC.md` §1–2 and §5): how a lake URL becomes an
//! object store, where every file lives, what a hit row holds, the registry CSV formats,
//! and the exact-money and window types every crate shares.
//!
//! A reader learns here what is stored and where; no other crate spells a path or a
//! column name itself.

pub mod cli;
pub mod compact;
pub mod error;
pub mod layout;
pub mod money;
pub mod registry;
pub mod reports;
pub mod schema;
pub mod store;
pub mod window;

pub use error::LakeError;
pub use store::Lake;

/// Name of the environment variable every command reads its lake URL from.
pub const LAKE_ENV: &str = "CLICKTRAIL_LAKE";
/// The lake used when none is given: a local folder, so a checkout is all one needs.
pub const DEFAULT_LAKE: &str = "data/lake";
