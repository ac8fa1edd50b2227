//! A YAML document as a tree whose every node knows its line and column, built from
//! `saphyr-parser`'s events. Scalars stay text (with a note of whether they were quoted):
//! the policy reader decides what each key's value must be.
use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// Where a node starts: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Pos {
    pub line: usize,
    pub col: usize,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    /// A scalar: its text, and whether it was written plain (unquoted, not a block
    /// scalar), which is what lets it be a null, a boolean or a number.
    Scalar {
        text: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    /// Keys in the order written; keys are scalars (anything else is refused).
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub pos: Pos,
    pub kind: Kind,
}

/// An error in the YAML itself, before any meaning is given to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct YamlError {
    pub pos: Pos,
    pub message: String,
}

/// Nesting deeper than this is refused (the policy needs 6 levels).
const MAX_DEPTH: usize = 64;
/// Nodes in the document after aliases are expanded (a guard against alias bombs).
const MAX_NODES: usize = 200_000;

impl Node {
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true } if is_null(text))
    }

    /// What kind of node this is, for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            Kind::Scalar { .. } if self.is_null() => "null",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a sequence",
            Kind::Map(_) => "a mapping",
        }
    }
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: span.start.line(),
        col: span.start.col() + 1,
    }
}

/// Parses one YAML document. An empty stream is `Ok(None)`.
pub(crate) fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut builder = Builder {
        parser: Parser::new_from_str(text),
        anchors: HashMap::new(),
        nodes: 0,
        last: Pos { line: 1, col: 1 },
    };
    builder.document()
}

struct Builder<'a> {
    parser: Parser<'a, saphyr_parser::StrInput<'a>>,
    anchors: HashMap<usize, Node>,
    nodes: usize,
    last: Pos,
}

impl<'a> Builder<'a> {
    fn next(&mut self) -> Result<(Event<'a>, Pos), YamlError> {
        match self.parser.next() {
            Some(Ok((event, span))) => {
                let p = pos(&span);
                self.last = p;
                Ok((event, p))
            }
            Some(Err(e)) => Err(YamlError {
                pos: Pos {
                    line: e.marker().line(),
                    col: e.marker().col() + 1,
                },
                message: format!("YAML syntax error: {}", e.info()),
            }),
            None => Err(YamlError {
                pos: self.last,
                message: "YAML syntax error: unexpected end of input".into(),
            }),
        }
    }

    fn document(&mut self) -> Result<Option<Node>, YamlError> {
        let mut root = None;
        loop {
            let (event, p) = self.next()?;
            match event {
                Event::StreamStart | Event::Nothing => {}
                Event::StreamEnd => return Ok(root),
                Event::DocumentStart(_) => {
                    if root.is_some() {
                        return Err(YamlError {
                            pos: p,
                            message: "a policy file holds one YAML document, found a second".into(),
                        });
                    }
                    let (event, p) = self.next()?;
                    root = Some(self.node(event, p, 0)?);
                }
                Event::DocumentEnd => {}
                other => {
                    return Err(YamlError {
                        pos: p,
                        message: format!("YAML: unexpected event {other:?}"),
                    });
                }
            }
        }
    }

    fn count(&mut self, p: Pos) -> Result<(), YamlError> {
        self.nodes += 1;
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                pos: p,
                message: format!("the document has more than {MAX_NODES} nodes"),
            });
        }
        Ok(())
    }

    fn node(&mut self, event: Event<'a>, p: Pos, depth: usize) -> Result<Node, YamlError> {
        if depth > MAX_DEPTH {
            return Err(YamlError {
                pos: p,
                message: format!("nested more than {MAX_DEPTH} levels deep"),
            });
        }
        self.count(p)?;
        let (node, anchor) = match event {
            Event::Alias(id) => {
                let Some(node) = self.anchors.get(&id).cloned() else {
                    return Err(YamlError {
                        pos: p,
                        message: "alias to an unknown anchor".into(),
                    });
                };
                self.nodes = self.nodes.saturating_add(count_nodes(&node));
                if self.nodes > MAX_NODES {
                    return Err(YamlError {
                        pos: p,
                        message: format!(
                            "the document has more than {MAX_NODES} nodes once aliases are expanded"
                        ),
                    });
                }
                return Ok(node);
            }
            Event::Scalar(text, style, anchor, tag) => {
                no_tag(tag.is_some(), p)?;
                let node = Node {
                    pos: p,
                    kind: Kind::Scalar {
                        text: text.into_owned(),
                        plain: style == ScalarStyle::Plain,
                    },
                };
                (node, anchor)
            }
            Event::SequenceStart(anchor, tag) => {
                no_tag(tag.is_some(), p)?;
                let mut items = Vec::new();
                loop {
                    let (event, ip) = self.next()?;
                    if let Event::SequenceEnd = event {
                        break;
                    }
                    items.push(self.node(event, ip, depth + 1)?);
                }
                let node = Node {
                    pos: p,
                    kind: Kind::Seq(items),
                };
                (node, anchor)
            }
            Event::MappingStart(anchor, tag) => {
                no_tag(tag.is_some(), p)?;
                let mut entries: Vec<(Node, Node)> = Vec::new();
                loop {
                    let (event, kp) = self.next()?;
                    if let Event::MappingEnd = event {
                        break;
                    }
                    let key = self.node(event, kp, depth + 1)?;
                    let Kind::Scalar { text, .. } = &key.kind else {
                        return Err(YamlError {
                            pos: key.pos,
                            message: format!(
                                "mapping keys must be scalars, found {}",
                                key.describe()
                            ),
                        });
                    };
                    if let Some((first, _)) = entries
                        .iter()
                        .find(|(k, _)| matches!(&k.kind, Kind::Scalar { text: t, .. } if t == text))
                    {
                        return Err(YamlError {
                            pos: key.pos,
                            message: format!(
                                "duplicate key {text:?} (first at line {})",
                                first.pos.line
                            ),
                        });
                    }
                    let (event, vp) = self.next()?;
                    let value = self.node(event, vp, depth + 1)?;
                    entries.push((key, value));
                }
                let node = Node {
                    pos: p,
                    kind: Kind::Map(entries),
                };
                (node, anchor)
            }
            other => {
                return Err(YamlError {
                    pos: p,
                    message: format!("YAML: unexpected event {other:?}"),
                });
            }
        };
        if anchor != 0 {
            self.anchors.insert(anchor, node.clone());
        }
        Ok(node)
    }
}

fn no_tag(tagged: bool, p: Pos) -> Result<(), YamlError> {
    if tagged {
        return Err(YamlError {
            pos: p,
            message: "YAML tags (`!...`) are not supported in a policy file".into(),
        });
    }
    Ok(())
}

fn count_nodes(node: &Node) -> usize {
    match &node.kind {
        Kind::Scalar { .. } => 1,
        Kind::Seq(items) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Kind::Map(entries) => {
            1 + entries
                .iter()
                .map(|(k, v)| count_nodes(k) + count_nodes(v))
                .sum::<usize>()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Node {
        parse(text).unwrap().unwrap()
    }

    #[test]
    fn positions_of_nodes() {
        let root = p("a: 1\nb:\n  - x\n  - {c: d}\n");
        let Kind::Map(entries) = &root.kind else {
            panic!()
        };
        assert_eq!(entries[0].0.pos, Pos { line: 1, col: 1 });
        assert_eq!(entries[0].1.pos, Pos { line: 1, col: 4 });
        assert_eq!(entries[1].0.pos, Pos { line: 2, col: 1 });
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!()
        };
        assert_eq!(items[0].pos, Pos { line: 3, col: 5 });
        assert_eq!(items[1].pos.line, 4);
    }

    #[test]
    fn plain_and_quoted() {
        let root = p("a: ~\nb: '~'\nc:\n");
        let Kind::Map(entries) = &root.kind else {
            panic!()
        };
        assert!(entries[0].1.is_null());
        assert!(!entries[1].1.is_null());
        assert!(entries[2].1.is_null());
    }

    #[test]
    fn empty_is_none() {
        assert!(parse("").unwrap().is_none());
        assert!(parse("# only a comment\n").unwrap().is_none());
    }

    #[test]
    fn errors() {
        let e = parse("a: 1\na: 2\n").unwrap_err();
        assert_eq!(e.pos, Pos { line: 2, col: 1 });
        assert!(e.message.contains("duplicate key \"a\""), "{}", e.message);

        let e = parse("a: [1, 2\n").unwrap_err();
        assert!(e.message.starts_with("YAML syntax error"), "{}", e.message);

        let e = parse("a: !!str 1\n").unwrap_err();
        assert!(e.message.contains("tags"), "{}", e.message);

        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(e.pos.line, 2);

        let e = parse("? [a]\n: 1\n").unwrap_err();
        assert!(e.message.contains("keys must be scalars"), "{}", e.message);
    }

    #[test]
    fn aliases_expand_and_bombs_are_refused() {
        let root = p("a: &x [1, 2]\nb: *x\n");
        let Kind::Map(entries) = &root.kind else {
            panic!()
        };
        assert!(matches!(&entries[1].1.kind, Kind::Seq(items) if items.len() == 2));

        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            bomb.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n",
                p = i - 1
            ));
        }
        let e = parse(&bomb).unwrap_err();
        assert!(e.message.contains("nodes"), "{}", e.message);

        let deep = "[".repeat(200) + &"]".repeat(200);
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("nested"), "{}", e.message);
    }
}
