//! Tree paths: keys joined with `/`, list indices as numbers. A key holding `/` or `%` is
//! percent-escaped (`a/b` → `a%2Fb`, `5%` → `5%25`), so every path names one node.

/// The escaped form of one dict key.
pub fn escape(key: &str) -> String {
    if !key.contains(['/', '%']) {
        return key.to_owned();
    }
    key.replace('%', "%25").replace('/', "%2F")
}

/// The key an escaped path segment stands for.
pub fn unescape(segment: &str) -> String {
    if !segment.contains('%') {
        return segment.to_owned();
    }
    segment
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%25", "%")
}

/// `parent` and one more escaped segment.
pub fn join(parent: &str, segment: &str) -> String {
    if parent.is_empty() {
        segment.to_owned()
    } else {
        format!("{parent}/{segment}")
    }
}

/// The escaped segments of `path`.
pub fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_round_trips_and_keeps_plain_keys_plain() {
        for key in ["net.0.weight", "a/b", "100%", "%2F", "x/%/y", ""] {
            assert_eq!(unescape(&escape(key)), key);
            assert!(!escape(key).contains('/'), "{key}");
        }
        assert_eq!(escape("net.0.weight"), "net.0.weight");
        assert_eq!(escape("a/b"), "a%2Fb");
    }

    #[test]
    fn segments_split_on_slashes() {
        let p = join(&join("state", "model"), &escape("a/b"));
        assert_eq!(p, "state/model/a%2Fb");
        assert_eq!(
            segments(&p).map(unescape).collect::<Vec<_>>(),
            ["state", "model", "a/b"]
        );
    }
}
