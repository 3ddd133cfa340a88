//! How deep a JSON text nests. The gateway parses only a message's envelope and passes
//! `params` on as the client sent them, so nothing else would stop a body of deeply
//! nested arrays from reaching an upstream whose parser recurses
//! (`limits.max_json_depth`).

/// Whether `body` (JSON, already known to parse) nests arrays and objects deeper than
/// `max` (`0`: no limit). Fewer opening brackets than `max` cannot nest deeper, so most
/// bodies cost one vectorised count; only the others are walked.
pub fn deeper_than(body: &[u8], max: usize) -> bool {
    if max == 0 || memchr::memchr2_iter(b'[', b'{', body).count() <= max {
        return false;
    }
    let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
    for &b in body {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::deeper_than;

    fn nested(depth: usize) -> String {
        format!(r#"{{"a":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth))
    }

    #[test]
    fn counts_arrays_and_objects_but_not_brackets_in_strings() {
        // The outer object is one level.
        assert!(!deeper_than(nested(9).as_bytes(), 10));
        assert!(deeper_than(nested(10).as_bytes(), 10));
        let strings = format!(r#"{{"a":"{}","b":"\"[[[["}}"#, "[".repeat(50));
        assert!(!deeper_than(strings.as_bytes(), 10));
        // Siblings are not depth.
        let wide = format!("[{}]", vec!["[1]"; 50].join(","));
        assert!(!deeper_than(wide.as_bytes(), 2));
        assert!(deeper_than(wide.as_bytes(), 1));
        assert!(!deeper_than(nested(500).as_bytes(), 0), "0: no limit");
    }
}
