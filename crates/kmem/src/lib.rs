//! kmem: the facade (work in progress on this branch).

mod meta;
pub mod sizes;

pub use meta::Meta;
