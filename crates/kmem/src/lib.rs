//! kmem: the facade (work in progress on this branch).

mod alloc;
mod cache;
pub mod error;
mod fill;
mod global;
mod object;
mod meta;
pub mod page;
pub mod sizes;
pub mod stats;

pub use alloc::{kmem_alloc, kmem_free, kmem_zalloc};
pub use cache::{Cache, CacheBuilder};
pub use global::Kmem;
pub use object::{Obj, ObjectCache};
pub use error::KmemError;
pub use fill::{Ctor, Dtor};
pub use kmem_magazine::Mode;
pub use meta::Meta;
