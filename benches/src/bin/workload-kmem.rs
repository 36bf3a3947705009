//! The workload suite with `kmem::Kmem` as the global allocator.

#[global_allocator]
static GLOBAL: kmem::Kmem = kmem::Kmem::new();

fn main() -> std::process::ExitCode {
    kmem_benches::workloads::main("kmem")
}
