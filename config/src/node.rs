//! The YAML document as a tree of located nodes: the first step of loading a config.
//!
//! serde-saphyr parses the text (YAML syntax, anchors and aliases, merge keys) and records
//! where every node is. Deserializing into this generic tree cannot fail on a well-formed
//! document, so after this step every remaining problem can be reported, not just the first.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::{DuplicateKeyPolicy, Options, Spanned};

use crate::raw::Pos;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Node {
    pub kind: Kind,
    /// Where the node is used (for an alias, the `*name`, not the anchored definition).
    pub pos: Pos,
    /// The source text of a plain scalar that YAML read as a bool or number, so that a string
    /// field given `1.10` gets `"1.10"`, not `"1.1"`.
    pub source: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in document order, duplicates included (the deserializer reports them).
    Map(Vec<(Node, Node)>),
}

impl Node {
    /// The text of a scalar as the user wrote it; `None` for null and collections.
    pub(crate) fn scalar_text(&self) -> Option<Cow<'_, str>> {
        if let Some(source) = &self.source {
            return Some(Cow::Borrowed(source));
        }
        match &self.kind {
            Kind::Str(s) => Some(Cow::Borrowed(s)),
            Kind::Bool(b) => Some(Cow::Owned(b.to_string())),
            Kind::Int(n) => Some(Cow::Owned(n.to_string())),
            Kind::Float(f) => Some(Cow::Owned(f.to_string())),
            Kind::Null | Kind::Seq(_) | Kind::Map(_) => None,
        }
    }

    /// The value under `key` if this is a mapping that has it.
    pub(crate) fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            Kind::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.scalar_text().as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    /// The elements if this is a sequence.
    pub(crate) fn elements(&self) -> &[Node] {
        match &self.kind {
            Kind::Seq(items) => items,
            _ => &[],
        }
    }

    /// How the node reads in a message: `'heavy'`, `a list`, `nothing (null)`.
    pub(crate) fn describe(&self) -> String {
        match &self.kind {
            Kind::Null => "nothing (null)".to_owned(),
            Kind::Seq(_) => "a list".to_owned(),
            Kind::Map(_) => "a mapping".to_owned(),
            _ => {
                let text = self.scalar_text().unwrap_or_default();
                let mut short: String = text.chars().take(40).collect();
                if short.len() < text.len() {
                    short.push_str("...");
                }
                format!("'{short}'")
            }
        }
    }
}

/// A YAML syntax error, with the position serde-saphyr reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

/// Parses one YAML document. An empty document (or one with only comments) is a null node.
pub(crate) fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut options = Options::default();
    // Duplicate keys reach the deserializer, which reports all of them, with both positions.
    options.duplicate_keys = DuplicateKeyPolicy::PassThrough;
    // YAML 1.2 booleans: `on`, `yes` and `no` stay strings instead of silently becoming bools.
    options.strict_booleans = true;
    options.with_snippet = false;
    let tree: Spanned<Tree> = serde_saphyr::from_str_with_options(text, options).map_err(|e| {
        let pos = e
            .location()
            .map_or(Pos::new(1, 1), |l| Pos::new(l.line(), l.column()));
        SyntaxError {
            pos,
            message: syntax_message(&e.to_string()),
        }
    })?;
    Ok(convert(text, tree))
}

/// serde-saphyr's message without its trailing " at line N, column M" (the diagnostic already
/// leads with the position) and in our words where its own would confuse a config author.
fn syntax_message(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) if message[i..].contains(", column ") => &message[..i],
        _ => message,
    };
    if message.starts_with("multiple YAML documents") {
        return "a config file holds a single YAML document; remove the second '---'".to_owned();
    }
    format!("invalid YAML: {message}")
}

fn convert(source: &str, spanned: Spanned<Tree>) -> Node {
    let at = spanned.referenced;
    let pos = Pos::new(at.line(), at.column());
    let span = spanned.defined.span();
    let plain_text = || {
        let start = usize::try_from(span.byte_offset()?).ok()?;
        let len = usize::try_from(span.byte_len()?).ok()?;
        source.get(start..start + len).map(str::to_owned)
    };
    let (kind, source_text) = match spanned.value {
        Tree::Null => (Kind::Null, None),
        Tree::Bool(b) => (Kind::Bool(b), plain_text()),
        Tree::Int(n) => (Kind::Int(n), plain_text()),
        Tree::Float(f) => (Kind::Float(f), plain_text()),
        Tree::Str(s) => (Kind::Str(s), None),
        Tree::Seq(items) => (
            Kind::Seq(items.into_iter().map(|n| convert(source, n)).collect()),
            None,
        ),
        Tree::Map(entries) => (
            Kind::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (convert(source, k), convert(source, v)))
                    .collect(),
            ),
            None,
        ),
    };
    // Only a plain token is trusted as the source text: a tagged or quoted number is
    // described by its value instead.
    let source_text = source_text.filter(|t| !t.is_empty() && !t.starts_with(['!', '"', '\'']));
    Node {
        kind,
        pos,
        source: source_text,
    }
}

/// What serde-saphyr produces, before positions are flattened into [`Node`].
enum Tree {
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<Tree>>),
    Map(Vec<(Spanned<Tree>, Spanned<Tree>)>),
}

impl<'de> Deserialize<'de> for Tree {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(TreeVisitor)
    }
}

struct TreeVisitor;

impl<'de> Visitor<'de> for TreeVisitor {
    type Value = Tree;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_unit<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }

    fn visit_none<E>(self) -> Result<Tree, E> {
        Ok(Tree::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Tree, D::Error> {
        Tree::deserialize(d)
    }

    fn visit_bool<E>(self, v: bool) -> Result<Tree, E> {
        Ok(Tree::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Tree, E> {
        Ok(Tree::Int(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Tree, E> {
        Ok(Tree::Int(v.into()))
    }

    fn visit_i128<E>(self, v: i128) -> Result<Tree, E> {
        Ok(Tree::Int(v))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Tree, E> {
        i128::try_from(v)
            .map(Tree::Int)
            .map_err(|_| E::custom("integer too large"))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Tree, E> {
        Ok(Tree::Float(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Tree, E> {
        Ok(Tree::Str(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Tree, E> {
        Ok(Tree::Str(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Tree, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Tree::Seq(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Tree, A::Error> {
        let mut entries = Vec::new();
        while let Some(entry) = map.next_entry()? {
            entries.push(entry);
        }
        Ok(Tree::Map(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_positions_and_plain_text() {
        let root = parse("a:\n  k: 1.10\n  j: 'x'\nb: [true, 0x10]\n").unwrap();
        let a = root.get("a").unwrap();
        assert_eq!(a.pos, Pos::new(2, 3));
        let k = a.get("k").unwrap();
        assert_eq!(k.kind, Kind::Float(1.1));
        assert_eq!(k.pos, Pos::new(2, 6));
        assert_eq!(k.scalar_text().unwrap(), "1.10");
        assert_eq!(a.get("j").unwrap().scalar_text().unwrap(), "x");
        let b = root.get("b").unwrap().elements();
        assert_eq!(b[0].kind, Kind::Bool(true));
        assert_eq!(b[1].kind, Kind::Int(16));
        assert_eq!(b[1].scalar_text().unwrap(), "0x10");
    }

    #[test]
    fn keeps_duplicate_keys_for_the_deserializer() {
        let root = parse("a: 1\na: 2\n").unwrap();
        let Kind::Map(entries) = root.kind else {
            panic!("not a map")
        };
        assert_eq!(entries.len(), 2);
    }

    #[test]
    fn yaml_1_2_booleans() {
        let root = parse("a: yes\nb: on\nc: false\n").unwrap();
        assert_eq!(root.get("a").unwrap().kind, Kind::Str("yes".into()));
        assert_eq!(root.get("b").unwrap().kind, Kind::Str("on".into()));
        assert_eq!(root.get("c").unwrap().kind, Kind::Bool(false));
    }

    #[test]
    fn aliases_are_expanded_at_the_use_site() {
        let root = parse("a: &x {k: v}\nb: *x\n").unwrap();
        let b = root.get("b").unwrap();
        assert_eq!(b.pos, Pos::new(2, 4));
        assert_eq!(b.get("k").unwrap().kind, Kind::Str("v".into()));
    }

    #[test]
    fn syntax_errors_have_a_position_and_a_clean_message() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert_eq!(err.pos, Pos::new(2, 2));
        assert!(err.message.starts_with("invalid YAML: "), "{}", err.message);
        assert!(!err.message.contains("line 2"), "{}", err.message);
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(
            err.message,
            "a config file holds a single YAML document; remove the second '---'"
        );
    }

    #[test]
    fn empty_document_is_null() {
        assert_eq!(parse("").unwrap().kind, Kind::Null);
        assert_eq!(parse("# nothing\n").unwrap().kind, Kind::Null);
    }
}
