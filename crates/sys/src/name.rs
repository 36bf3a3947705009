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
        let len = cut(name, N);
        let mut bytes = [0; N];
        bytes[..len].copy_from_slice(&name.as_bytes()[..len]);
        Name {
            len: len as u8,
            bytes,
        }
    }

    /// `name` cut short enough that all of `suffix` follows it (a suffix
    /// longer than `N` bytes is itself cut): a cache named after its
    /// arena and its size keeps the size however long the arena's name.
    ///
    /// ```
    /// use kmem_sys::Name;
    ///
    /// assert_eq!(Name::<8>::with_suffix("heap", "-64").as_str(), "heap-64");
    /// assert_eq!(Name::<8>::with_suffix("kernel_arena", "-4096").as_str(), "ker-4096");
    /// ```
    pub fn with_suffix(name: &str, suffix: &str) -> Self {
        let suffix = Self::new(suffix);
        let mut out = Self::new(&name[..cut(name, N - usize::from(suffix.len))]);
        let at = usize::from(out.len);
        let more = usize::from(suffix.len);
        out.bytes[at..at + more].copy_from_slice(&suffix.bytes[..more]);
        out.len += suffix.len;
        out
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        // The bytes were copied from a `&str` and cut at a char boundary, so
        // this cannot fail; "?" keeps the function total all the same.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("?")
    }
}

/// The length of the longest prefix of `s` of at most `max` bytes that ends
/// at a character boundary.
fn cut(s: &str, max: usize) -> usize {
    let mut len = s.len().min(max);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    len
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

    #[test]
    fn a_suffix_is_kept_whole_and_the_name_cut_before_it() {
        assert_eq!(Name::<8>::with_suffix("ab", "-16").as_str(), "ab-16");
        assert_eq!(
            Name::<8>::with_suffix("abcdefgh", "-16").as_str(),
            "abcde-16"
        );
        // The cut in the name falls before a two-byte character.
        assert_eq!(Name::<6>::with_suffix("abé", "-16").as_str(), "ab-16");
        assert_eq!(Name::<4>::with_suffix("abc", "-12345").as_str(), "-123");
        assert_eq!(Name::<4>::with_suffix("", "").as_str(), "");
    }
}
