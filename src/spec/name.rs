//! The one name rule shared by processes, locks, queues and pipes.

/// True for names matching `[A-Za-z_][A-Za-z0-9_-]*`.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

#[cfg(test)]
mod tests {
    use super::is_valid_name;

    #[test]
    fn names() {
        for good in ["a", "_x", "load-2", "A_b-C9"] {
            assert!(is_valid_name(good), "{good}");
        }
        for bad in ["", "9lives", "-x", "a b", "q.x", "é", "a/b"] {
            assert!(!is_valid_name(bad), "{bad}");
        }
    }
}
