//! The workloads under jemalloc (tikv-jemallocator); see
//! `kmem_benches::workloads`.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> std::process::ExitCode {
    kmem_benches::workloads::main("jemalloc")
}
