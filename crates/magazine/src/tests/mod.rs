//! Loom models (`RUSTFLAGS="--cfg loom" cargo test -p kmem-magazine --lib loom`).

mod loom_depot;
