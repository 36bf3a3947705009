//! Stack traces for audit records: raw return addresses captured into a
//! fixed array (illumos `getpcstack`), symbolized only when printed.
//!
//! Capture uses glibc's `backtrace(3)`, which walks the unwind tables and
//! allocates (once, loading `libgcc_s`) through glibc's `malloc`, never
//! through the Rust global allocator, so it is safe inside `Kmem`. Printing
//! names a frame with `dladdr(3)`: an exported symbol and offset, or the
//! object file and the offset to hand to `addr2line`. Under Miri, which has
//! neither call, capture asks Miri's own stack walk and frames print as bare
//! addresses. Elsewhere no stack is captured (depth 0).

use core::fmt;

/// `KMEM_STACK_DEPTH`: frames kept per transaction.
pub const STACK_DEPTH: usize = 15;

/// Frames of the allocator itself skipped at the top of a capture.
const SKIP: usize = 3;

/// Fills `out` with the caller's return addresses, innermost first;
/// returns how many were written.
#[inline(never)]
pub(crate) fn capture(out: &mut [usize; STACK_DEPTH]) -> usize {
    #[cfg(all(target_os = "linux", target_env = "gnu", not(miri)))]
    {
        let mut raw = [core::ptr::null_mut::<libc::c_void>(); STACK_DEPTH + SKIP];
        // SAFETY: `raw` has room for the count passed.
        let n = unsafe { libc::backtrace(raw.as_mut_ptr(), raw.len() as libc::c_int) };
        let frames = raw.get(SKIP..n.max(0) as usize).unwrap_or(&[]);
        for (o, f) in out.iter_mut().zip(frames) {
            *o = *f as usize;
        }
        frames.len().min(STACK_DEPTH)
    }
    #[cfg(miri)]
    {
        // Miri's own stack walk (its `extern "Rust"` interface; `flags` 0
        // and 1 are the documented ones): the frames' function pointers,
        // innermost first. Only a walk that fits the array is taken, as
        // nothing here may allocate.
        unsafe extern "Rust" {
            fn miri_backtrace_size(flags: u64) -> usize;
            fn miri_get_backtrace(flags: u64, buf: *mut *mut ());
        }
        const MAX_WALK: usize = 256;
        let mut raw = [core::ptr::null_mut::<()>(); MAX_WALK];
        // SAFETY: a Miri built-in with no preconditions.
        let n = unsafe { miri_backtrace_size(0) };
        if n > MAX_WALK {
            return 0;
        }
        // SAFETY: `raw` has room for the `n` frames the walk writes.
        unsafe { miri_get_backtrace(1, raw.as_mut_ptr()) };
        // The walk starts at `capture` itself, as `backtrace` does.
        let frames = raw.get(SKIP..n).unwrap_or(&[]);
        for (o, f) in out.iter_mut().zip(frames) {
            *o = f.addr();
        }
        frames.len().min(STACK_DEPTH)
    }
    #[cfg(not(any(all(target_os = "linux", target_env = "gnu"), miri)))]
    {
        let _ = (out, SKIP);
        0
    }
}

/// One return address, printed as `symbol+0xoff`, `object+0xoff` or the
/// bare address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Frame(pub usize);

impl fmt::Display for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Miri has no `dladdr`: a frame is its address there.
        #[cfg(not(miri))]
        if let Some(r) = self.symbolize(f) {
            return r;
        }
        write!(f, "{:#x}", self.0)
    }
}

impl Frame {
    /// Writes `symbol+0xoff` or `object+0xoff` when `dladdr` knows the
    /// address; `None` (nothing written) when it does not.
    #[cfg(not(miri))]
    fn symbolize(&self, f: &mut fmt::Formatter<'_>) -> Option<fmt::Result> {
        // SAFETY: an all-zero Dl_info is a valid value to be overwritten.
        let mut info: libc::Dl_info = unsafe { core::mem::zeroed() };
        // SAFETY: dladdr reads no memory at the address; `info` is ours.
        let found = unsafe { libc::dladdr(self.0 as *const libc::c_void, &mut info) } != 0;
        if !found {
            return None;
        }
        let cstr = |p: *const libc::c_char| {
            // SAFETY: dladdr's strings are NUL-terminated and live as long
            // as the object stays loaded.
            (!p.is_null()).then(|| unsafe { core::ffi::CStr::from_ptr(p) }.to_string_lossy())
        };
        if let Some(sym) = cstr(info.dli_sname) {
            return Some(write!(f, "{sym}+{:#x}", self.0 - info.dli_saddr as usize));
        }
        let obj = cstr(info.dli_fname)?;
        let obj = obj.rsplit('/').next().unwrap_or("?").to_string();
        Some(write!(f, "{obj}+{:#x}", self.0 - info.dli_fbase as usize))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_and_prints_frames() {
        let mut s = [0; STACK_DEPTH];
        let n = capture(&mut s);
        if cfg!(all(target_os = "linux", target_env = "gnu")) {
            assert!(n > 0, "no frames captured");
            assert!(!Frame(s[0]).to_string().is_empty());
        }
        assert_eq!(Frame(0).to_string(), "0x0");
    }
}
