//! Counted nouns in messages and log lines: `1 record`, `2 records`, `0 records`. The library
//! and the command line (which includes this file) both count with [`plural`].

use std::fmt;

/// `count` followed by `noun`, with an `s` unless `count` is one (every noun ndbridge counts
/// makes its plural so).
pub(crate) fn plural(count: u64, noun: &'static str) -> Plural {
    Plural { count, noun }
}

/// A count and its noun, as [`plural`] writes them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plural {
    count: u64,
    noun: &'static str,
}

impl fmt::Display for Plural {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.count == 1 { "" } else { "s" };
        write!(f, "{} {}{s}", self.count, self.noun)
    }
}

#[cfg(test)]
mod tests {
    use super::plural;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(plural(0, "record").to_string(), "0 records");
        assert_eq!(plural(1, "record").to_string(), "1 record");
        assert_eq!(plural(2, "message").to_string(), "2 messages");
        assert_eq!(plural(21, "gap").to_string(), "21 gaps");
    }
}
