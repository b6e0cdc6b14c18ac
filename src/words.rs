//! Counted nouns in English for every message: "1 binary", "2 binaries", never "1 binaries".

/// "1 binary", "3 binaries", "0 files": the count and the noun in the number it takes.
pub fn count(count: usize, noun: &str) -> String {
    if count == 1 {
        format!("{count} {noun}")
    } else {
        format!("{count} {}", plural(noun))
    }
}

/// The plural of a noun jailprov prints. The last word of a compound takes the plural
/// ("nss-module" -> "nss-modules", "man page" -> "man pages").
pub fn plural(noun: &str) -> String {
    // Nouns that do not count ("content" of a file) or are plural already ("[[files]]").
    const UNCHANGED: &[&str] = &["content", "generated", "run-time", "[[files]]", "[[links]]", "[[devices]]"];
    if UNCHANGED.contains(&noun) {
        return noun.to_owned();
    }
    let before_last = noun.chars().rev().nth(1).unwrap_or(' ');
    if let Some(stem) = noun.strip_suffix('y').filter(|_| !"aeiou".contains(before_last)) {
        format!("{stem}ies")
    } else if noun.ends_with('s') || noun.ends_with('x') || noun.ends_with("ch") || noun.ends_with("sh") {
        format!("{noun}es")
    } else {
        format!("{noun}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_takes_the_singular_every_other_count_the_plural() {
        let said: Vec<String> = [
            (1, "binary"),
            (2, "binary"),
            (0, "file"),
            (1, "file"),
            (3, "library"),
            (2, "nss-module"),
            (4, "key"),
            (2, "process"),
            (5, "content"),
            (3, "generated"),
            (2, "symlink"),
            (1, "problem"),
            (3, "problem"),
        ]
        .iter()
        .map(|(n, noun)| count(*n, noun))
        .collect();
        assert_eq!(
            said,
            [
                "1 binary",
                "2 binaries",
                "0 files",
                "1 file",
                "3 libraries",
                "2 nss-modules",
                "4 keys",
                "2 processes",
                "5 content",
                "3 generated",
                "2 symlinks",
                "1 problem",
                "3 problems"
            ]
        );
    }
}
