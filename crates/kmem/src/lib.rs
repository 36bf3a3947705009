//! kmem: the facade (work in progress on this branch).

mod alloc;
mod cache;
pub mod error;
mod fill;
mod global;
mod meta;
mod object;
pub mod page;
pub mod sizes;
pub mod stats;

pub use alloc::{kmem_alloc, kmem_free, kmem_zalloc};
pub use cache::{Cache, CacheBuilder};
pub use error::KmemError;
pub use fill::{Ctor, Dtor};
pub use global::Kmem;
pub use kmem_magazine::Mode;
pub use meta::Meta;
pub use object::{Obj, ObjectCache};
