//! "Did you mean ...?" for misspelt keys, values and names.

/// The candidate closest to `input`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    input: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let lower = input.to_ascii_lowercase();
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::did_you_mean;

    #[test]
    fn suggests_close_names_only() {
        let keys = ["shell", "cmd", "stdout", "start"];
        assert_eq!(did_you_mean("shel", keys), Some("shell"));
        assert_eq!(did_you_mean("stdot", keys), Some("stdout"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
