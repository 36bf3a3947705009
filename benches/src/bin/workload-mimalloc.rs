//! The workloads under mimalloc; see `kmem_benches::workloads`.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    kmem_benches::workloads::main("mimalloc")
}
