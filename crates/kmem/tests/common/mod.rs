//! Helpers shared by the test binaries that check kmem's error reports.

/// Asserts that `text` contains every one of `parts`, showing `text` and
/// the missing part when one is not there.
pub fn assert_says(text: &str, parts: &[&str]) {
    for part in parts {
        assert!(text.contains(part), "missing {part:?} in:\n{text}");
    }
}
