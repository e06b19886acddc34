//! Diagnostics: what a user sees when a config is wrong, one line per problem,
//! `file:line:col: field.path: message`, every problem at once, sorted by position.

use std::cell::RefCell;
use std::collections::HashSet;
use std::fmt;

use crate::raw::Pos;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file name as the caller gave it (a path, or a label such as `<stdin>`).
    pub file: String,
    /// 1-based; 0 when the problem has no position (the file could not be read).
    pub line: u64,
    /// 1-based; 0 when the problem has no position.
    pub column: u64,
    /// Where in the config, e.g. `listeners[0].routes[1].cluster`. Empty for problems with the
    /// document as a whole (YAML syntax errors, an unreadable file).
    pub path: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.path.is_empty() {
            write!(f, "{}: ", self.path)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one config, sorted by position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    pub fn iter(&self) -> std::slice::Iter<'_, Diagnostic> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

impl<'a> IntoIterator for &'a Diagnostics {
    type Item = &'a Diagnostic;
    type IntoIter = std::slice::Iter<'a, Diagnostic>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

/// Collects diagnostics while one file is parsed and validated.
///
/// Shared by reference between the deserializer and the validator (hence the `RefCell`): both
/// keep going after a problem so that one run shows the user everything to fix.
pub(crate) struct Collector {
    file: String,
    found: RefCell<Vec<Diagnostic>>,
    /// Paths of fields the user probably meant but misspelled (`adress` for `address`). A missing
    /// required field on this list is not reported again: the unknown-field error already
    /// says "did you mean".
    typo_targets: RefCell<HashSet<String>>,
}

impl Collector {
    pub(crate) fn new(file: &str) -> Self {
        Collector {
            file: file.to_owned(),
            found: RefCell::new(Vec::new()),
            typo_targets: RefCell::new(HashSet::new()),
        }
    }

    pub(crate) fn report(&self, pos: Pos, path: &str, message: impl Into<String>) {
        self.found.borrow_mut().push(Diagnostic {
            file: self.file.clone(),
            line: pos.line,
            column: pos.column,
            path: path.to_owned(),
            message: message.into(),
        });
    }

    pub(crate) fn note_typo_target(&self, path: String) {
        self.typo_targets.borrow_mut().insert(path);
    }

    pub(crate) fn is_typo_target(&self, path: &str) -> bool {
        self.typo_targets.borrow().contains(path)
    }

    /// Everything reported so far, sorted by position (as `finish` sorts it), leaving none.
    pub(crate) fn take(&self) -> Vec<Diagnostic> {
        let mut found = std::mem::take(&mut *self.found.borrow_mut());
        found.sort_by_key(|d| (d.line, d.column));
        found.dedup();
        found
    }

    /// The model if nothing was reported, otherwise every diagnostic, sorted by position.
    ///
    /// The sort is stable, so problems at the same position keep the order they were found in
    /// (structure before meaning); exact duplicates (an anchor used twice) are shown once.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, Diagnostics> {
        let mut found = self.found.into_inner();
        match value {
            Some(value) if found.is_empty() => Ok(value),
            _ => {
                found.sort_by_key(|d| (d.line, d.column));
                found.dedup();
                Err(Diagnostics(found))
            }
        }
    }
}

/// `a`, `b`, `c` as `a, b, c`: how lists of choices appear in messages.
pub(crate) fn list(items: impl IntoIterator<Item = impl AsRef<str>>) -> String {
    let mut out = String::new();
    for (i, item) in items.into_iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(item.as_ref());
    }
    out
}

/// The candidate closest to `word` by edit distance, if it is close enough to be a likely typo.
///
/// "Close enough" is at most one edit per three characters (at least one), so `adress` finds
/// `address` but `port` does not find `protocol`. Case differences count as half an edit, so a
/// capitalised field name is still recognised.
pub(crate) fn did_you_mean<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    if let Some(same) = candidates.iter().find(|c| c.eq_ignore_ascii_case(word)) {
        return Some(same);
    }
    let limit = (word.chars().count() / 3).max(1) * 2;
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Damerau-Levenshtein (optimal string alignment) distance, doubled so that a change of case
/// alone can cost 1 where any other edit costs 2.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i * 2;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j * 2;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let subst = if a[i - 1] == b[j - 1] {
                0
            } else if a[i - 1].eq_ignore_ascii_case(&b[j - 1]) {
                1
            } else {
                2
            };
            let mut best = (rows[i - 1][j] + 2)
                .min(rows[i][j - 1] + 2)
                .min(rows[i - 1][j - 1] + subst);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 2);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

/// ` (did you mean 'x'?)` or nothing: appended to messages about unknown names.
pub(crate) fn suggestion(word: &str, candidates: &[&str]) -> String {
    match did_you_mean(word, candidates) {
        Some(c) if c != word => format!(" (did you mean '{c}'?)"),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTENER_FIELDS: &[&str] = &[
        "name",
        "address",
        "protocol",
        "direction",
        "routes",
        "cluster",
    ];

    #[test]
    fn suggests_close_field_names() {
        assert_eq!(did_you_mean("adress", LISTENER_FIELDS), Some("address"));
        assert_eq!(did_you_mean("adddress", LISTENER_FIELDS), Some("address"));
        assert_eq!(did_you_mean("protcol", LISTENER_FIELDS), Some("protocol"));
        assert_eq!(did_you_mean("route", LISTENER_FIELDS), Some("routes"));
        assert_eq!(did_you_mean("Cluster", LISTENER_FIELDS), Some("cluster"));
        assert_eq!(did_you_mean("nmae", LISTENER_FIELDS), Some("name"));
        assert_eq!(did_you_mean("ADDRESS", LISTENER_FIELDS), Some("address"));
    }

    #[test]
    fn does_not_suggest_unrelated_names() {
        assert_eq!(did_you_mean("port", LISTENER_FIELDS), None);
        assert_eq!(did_you_mean("tls", LISTENER_FIELDS), None);
        assert_eq!(did_you_mean("x", LISTENER_FIELDS), None);
    }

    #[test]
    fn suggestion_text() {
        assert_eq!(
            suggestion("adress", LISTENER_FIELDS),
            " (did you mean 'address'?)"
        );
        assert_eq!(suggestion("zzz", LISTENER_FIELDS), "");
    }

    #[test]
    fn diagnostics_sort_by_position_and_dedup() {
        let c = Collector::new("f.yaml");
        c.report(Pos::new(9, 1), "b", "second");
        c.report(Pos::new(2, 7), "a", "first");
        c.report(Pos::new(9, 1), "b", "second");
        c.report(Pos::new(2, 3), "", "zeroth");
        let d = c.finish::<()>(None).unwrap_err();
        assert_eq!(
            d.to_string(),
            "f.yaml:2:3: zeroth\nf.yaml:2:7: a: first\nf.yaml:9:1: b: second"
        );
    }

    #[test]
    fn finish_without_errors_returns_the_value() {
        let c = Collector::new("f.yaml");
        assert_eq!(c.finish(Some(5)), Ok(5));
    }
}
