//! [`Name`]: a short name stored inline, so naming an arena or a cache never
//! allocates (they may sit under a `GlobalAlloc`).

use core::fmt;

/// Up to `N` bytes of a name, kept inline; a longer name is cut at a
/// character boundary. `N` is at most 255.
///
/// ```
/// use kmem_sys::Name;
///
/// let n = Name::<4>::new("héllo"); // 'é' is two bytes: cut before 'l'
/// assert_eq!(n.as_str(), "hél");
/// assert_eq!(n.to_string(), "hél");
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Name<const N: usize> {
    len: u8,
    bytes: [u8; N],
}

impl<const N: usize> Name<N> {
    /// Copies up to `N` bytes of `name`, cut at a character boundary.
    pub fn new(name: &str) -> Self {
        const { assert!(N <= u8::MAX as usize, "a Name holds at most 255 bytes") };
        let mut len = name.len().min(N);
        while !name.is_char_boundary(len) {
            len -= 1;
        }
        let mut bytes = [0; N];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Name {
            len: len as u8,
            bytes,
        }
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        // The bytes were copied from a `&str` and cut at a char boundary, so
        // this cannot fail; "?" keeps the function total all the same.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

impl<const N: usize> fmt::Display for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for Name<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::Name;

    #[test]
    fn short_names_are_kept_whole_and_long_ones_cut() {
        assert_eq!(Name::<8>::new("kmem").as_str(), "kmem");
        assert_eq!(Name::<8>::new("").as_str(), "");
        assert_eq!(Name::<8>::new("kmem_alloc_64").as_str(), "kmem_all");
        // A three-byte character straddling the limit is dropped whole.
        assert_eq!(Name::<5>::new("abc€").as_str(), "abc");
        assert_eq!(format!("{:?}", Name::<8>::new("x\"y")), "\"x\\\"y\"");
    }
}
