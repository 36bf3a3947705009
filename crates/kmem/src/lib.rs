//! kmem: the facade (work in progress on this branch).

pub mod error;
mod meta;
pub mod page;
pub mod sizes;
pub mod stats;

pub use error::KmemError;
pub use meta::Meta;
