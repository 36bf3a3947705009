//! The workloads under the system allocator (glibc `malloc` on Linux); see
//! `kmem_benches::workloads`.

fn main() -> std::process::ExitCode {
    kmem_benches::workloads::main("system")
}
