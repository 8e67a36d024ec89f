//! A small line diff for check mode ("what would change in this file").
//!
//! Longest-common-subsequence over lines, printed as `-`/`+` lines with up to two lines of
//! context. Quadratic in the number of lines, so files larger than [`MAX_LINES`] are only
//! reported as different — the config files clusterkit manages are far smaller.

/// Above this many lines (either side) no line diff is computed.
pub const MAX_LINES: usize = 3000;

/// A unified-style diff of `old` → `new`, or `None` when they are equal.
pub fn unified(path: &str, old: &str, new: &str) -> Option<String> {
    if old == new {
        return None;
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let mut out = format!("--- {path}\n+++ {path} (wanted)\n");
    if a.len() > MAX_LINES || b.len() > MAX_LINES {
        out.push_str(&format!(
            "(content differs: {} → {} lines)\n",
            a.len(),
            b.len()
        ));
        return Some(out);
    }
    // lcs[i][j] = length of the LCS of a[i..] and b[j..].
    let mut lcs = vec![vec![0u32; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    // Walk the table into a list of (tag, line).
    let mut ops: Vec<(char, &str)> = Vec::new();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', a[i]));
            i += 1;
            j += 1;
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', a[i]));
            i += 1;
        } else {
            ops.push(('+', b[j]));
            j += 1;
        }
    }
    // Keep changed lines and two lines of context around them.
    const CONTEXT: usize = 2;
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, (t, _))| *t != ' ')
        .map(|(k, _)| k)
        .collect();
    let mut last_printed: Option<usize> = None;
    for (k, (tag, line)) in ops.iter().enumerate() {
        let near = changed
            .iter()
            .any(|&c| k + CONTEXT >= c && k <= c + CONTEXT);
        if !near {
            continue;
        }
        if let Some(last) = last_printed {
            if k > last + 1 {
                out.push_str("@@\n");
            }
        }
        out.push(*tag);
        out.push_str(line);
        out.push('\n');
        last_printed = Some(k);
    }
    if !old.is_empty() && !new.is_empty() && old.ends_with('\n') != new.ends_with('\n') {
        out.push_str("\\ newline at end of file differs\n");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shows_changed_lines_with_context() {
        let old = "a\nb\nc\nd\ne\nf\ng\n";
        let new = "a\nb\nc\nD\ne\nf\ng\n";
        let d = unified("/etc/x", old, new).unwrap();
        assert!(d.contains("-d\n+D\n"), "{d}");
        assert!(d.contains(" c\n") && d.contains(" e\n"), "{d}");
        assert!(!d.contains(" a\n"), "{d}");
        assert!(unified("/etc/x", old, old).is_none());
    }

    #[test]
    fn new_file_is_all_additions() {
        let d = unified("/etc/y", "", "one\ntwo\n").unwrap();
        assert!(d.contains("+one\n+two\n"), "{d}");
    }
}
