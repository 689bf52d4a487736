//! The text edit behind `onionbalance drain` and `undrain`: give one instance `drain: true`,
//! or take it away, in the config file's text, touching nothing else.
//!
//! The file is the operator's: its comments, order, quoting and layout stay as they are, so
//! the edit is made on the text, in the instance's own mapping, found through the instance's
//! address as written there. In block style the key gets a line of its own, indented as the
//! mapping's other keys, after the mapping's last line; in flow style (`{address: ..., name:
//! ...}`) it is appended before the closing brace. An existing `drain:` has its value
//! replaced; undraining removes the key (its line, or its entry), or sets it to `false` where
//! removing it would take a comment or a `- ` with it.
//!
//! Every edit is checked before it is offered: the new text, parsed, must be the old
//! document with exactly that one change, compared as YAML values, so that nothing else can
//! have changed, however the text was laid out (an anchor shared with another entry, an
//! address in a comment, a layout this module does not know). An edit that fails the check
//! is not made; the caller tells the operator to edit the file by hand.

use serde_yaml::{Mapping, Value};

/// Where the instance is: its place in the file's `services:` list and in that service's
/// `instances:` list (both from 0, in file order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Place {
    /// Index in `services:`.
    pub(crate) service: usize,
    /// Index in the service's `instances:`.
    pub(crate) instance: usize,
}

/// What [`set_drain`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The new text of the file.
    Changed(String),
    /// The instance's `drain:` says so already: nothing to change.
    Unchanged,
}

/// Why the edit was not made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EditError {
    /// The text is not a config document with an instance at that place (the caller checks
    /// the file first, so the file changed in between).
    #[error("the file does not have that instance any more ({0})")]
    Shape(String),
    /// No edit of the text passed the check.
    #[error("cannot edit the instance's entry safely: {0}")]
    Unsafe(String),
}

/// Sets the `drain:` of the instance at `place` in the YAML `text` to `drained`: the new
/// text, or [`Outcome::Unchanged`] when it is so already.
pub(crate) fn set_drain(text: &str, place: Place, drained: bool) -> Result<Outcome, EditError> {
    let doc: Value =
        serde_yaml::from_str(text).map_err(|e| EditError::Shape(format!("not YAML: {e}")))?;
    let entry = instance(&doc, place)?;
    let address = match entry.get("address") {
        Some(Value::String(a)) => a.clone(),
        _ => return Err(EditError::Shape("the instance has no `address:`".into())),
    };
    let now = match entry.get("drain") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(EditError::Unsafe(
                "its `drain:` is not `true` or `false`".into(),
            ))
        }
    };
    if now == drained {
        return Ok(Outcome::Unchanged);
    }
    let flows = flow_mappings(text);
    let mut tried = 0;
    for (pos, _) in text.match_indices(address.as_str()) {
        let Some((edit, key)) = edit_at(text, &flows, pos, address.len(), drained) else {
            continue;
        };
        tried += 1;
        let new_text = edit.apply(text);
        let mut expected = doc.clone();
        set_key(&mut expected, place, key);
        if serde_yaml::from_str::<Value>(&new_text).is_ok_and(|new| new == expected) {
            return Ok(Outcome::Changed(new_text));
        }
    }
    Err(EditError::Unsafe(if tried == 0 {
        format!("its `address: {address}` is not written in a way this command can edit")
    } else {
        "the edited file would differ in more than this instance's `drain:`".into()
    }))
}

/// The instance mapping at `place` in `doc`.
fn instance(doc: &Value, place: Place) -> Result<&Mapping, EditError> {
    doc.get("services")
        .and_then(|s| s.get(place.service))
        .and_then(|s| s.get("instances"))
        .and_then(|i| i.get(place.instance))
        .and_then(Value::as_mapping)
        .ok_or_else(|| {
            EditError::Shape(format!(
                "no instance {} in service {}",
                place.instance + 1,
                place.service + 1
            ))
        })
}

/// What an edit does to the instance's `drain:` key, as a YAML value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    /// Set to this value (added or replaced).
    Set(bool),
    /// Removed.
    Removed,
}

/// `doc` with the instance at `place` having `key` done to its `drain:`.
fn set_key(doc: &mut Value, place: Place, key: Key) {
    let Some(entry) = doc
        .get_mut("services")
        .and_then(|s| s.get_mut(place.service))
        .and_then(|s| s.get_mut("instances"))
        .and_then(|i| i.get_mut(place.instance))
        .and_then(Value::as_mapping_mut)
    else {
        return;
    };
    let name = Value::String("drain".into());
    match key {
        Key::Set(b) => {
            entry.insert(name, Value::Bool(b));
        }
        Key::Removed => {
            entry.remove(&name);
        }
    }
}

/// A replacement of `text[start..end]`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Edit {
    /// First byte replaced.
    start: usize,
    /// One past the last byte replaced (`start` for an insertion).
    end: usize,
    /// What goes there.
    with: String,
}

impl Edit {
    /// `text` with this edit made.
    fn apply(&self, text: &str) -> String {
        let mut out = String::with_capacity(text.len() + self.with.len());
        out.push_str(&text[..self.start]);
        out.push_str(&self.with);
        out.push_str(&text[self.end..]);
        out
    }
}

/// The edit that sets `drain:` to `drained` in the mapping whose `address:` value is at
/// `text[pos..pos + len]`, and what it does to the key; `None` when the occurrence is not
/// such a value.
fn edit_at(
    text: &str,
    flows: &[FlowMapping],
    pos: usize,
    len: usize,
    drained: bool,
) -> Option<(Edit, Key)> {
    // The innermost flow mapping around the occurrence, if any.
    let flow = flows
        .iter()
        .filter(|f| f.open < pos && pos < f.close)
        .max_by_key(|f| f.open);
    match flow {
        Some(f) => flow_edit(text, f, pos, len, drained),
        None => block_edit(text, pos, drained),
    }
}

// ---- Flow style: `{address: ..., name: ...}` ----

/// A flow mapping in the text: its braces and its entries.
#[derive(Debug, Clone, PartialEq, Eq)]
struct FlowMapping {
    /// Byte offset of `{`.
    open: usize,
    /// Byte offset of the matching `}`.
    close: usize,
    /// Each entry's bytes, without surrounding spaces, comments or commas.
    entries: Vec<(usize, usize)>,
}

/// One open flow collection while scanning.
#[derive(Debug)]
struct Frame {
    /// `{` or `[`.
    kind: u8,
    /// Byte offset of the opening bracket.
    open: usize,
    /// Entries finished so far.
    entries: Vec<(usize, usize)>,
    /// The current entry's content so far: first and one-past-last significant byte.
    content: Option<(usize, usize)>,
}

impl Frame {
    /// Notes significant bytes `start..end` as part of the current entry.
    fn saw(&mut self, start: usize, end: usize) {
        self.content = Some(match self.content {
            Some((s, _)) => (s, end),
            None => (start, end),
        });
    }

    /// Ends the current entry (at a `,` or the closing bracket).
    fn end_entry(&mut self) {
        if let Some(c) = self.content.take() {
            self.entries.push(c);
        }
    }
}

/// Every flow mapping (`{...}`) of a YAML text, with its entries. Brackets and commas inside
/// quoted scalars and comments are not structure; in block context a bracket is structure
/// only where a node starts (`key: {`, `- [`). Good enough to find where to edit: the result
/// of an edit is checked anyway.
fn flow_mappings(text: &str) -> Vec<FlowMapping> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    // The last significant byte before this one on the current line (block context) or
    // anywhere (flow context): decides whether a node may start here.
    let mut prev: Option<u8> = None;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let node_start = match prev {
            None => true,
            Some(p) => matches!(p, b'{' | b'[' | b',' | b':' | b'-' | b'?'),
        };
        match b {
            b'\n' => {
                if stack.is_empty() {
                    prev = None;
                }
                i += 1;
            }
            b' ' | b'\t' | b'\r' => i += 1,
            b'#' if i == 0 || matches!(bytes[i - 1], b' ' | b'\t' | b'\n' | b'\r') => {
                // A comment, to the end of the line.
                i = bytes[i..]
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(bytes.len(), |n| i + n);
            }
            b'\'' | b'"' if node_start => {
                let end = quoted_end(bytes, i);
                if let Some(f) = stack.last_mut() {
                    f.saw(i, end);
                }
                prev = Some(b'a');
                i = end;
            }
            b'&' | b'!' if node_start => {
                // An anchor or a tag: the node still starts after it.
                let end = bytes[i..]
                    .iter()
                    .position(|c| c.is_ascii_whitespace() || b",[]{}".contains(c))
                    .map_or(bytes.len(), |n| i + n);
                if let Some(f) = stack.last_mut() {
                    f.saw(i, end);
                }
                i = end;
            }
            b'{' | b'[' if node_start || !stack.is_empty() => {
                stack.push(Frame {
                    kind: b,
                    open: i,
                    entries: Vec::new(),
                    content: None,
                });
                prev = Some(b);
                i += 1;
            }
            b'}' | b']' if !stack.is_empty() => {
                if let Some(mut frame) = stack.pop() {
                    frame.end_entry();
                    if frame.kind == b'{' && b == b'}' {
                        found.push(FlowMapping {
                            open: frame.open,
                            close: i,
                            entries: frame.entries,
                        });
                    }
                    if let Some(parent) = stack.last_mut() {
                        parent.saw(frame.open, i + 1);
                    }
                }
                prev = Some(b'a');
                i += 1;
            }
            b',' if !stack.is_empty() => {
                if let Some(f) = stack.last_mut() {
                    f.end_entry();
                }
                prev = Some(b);
                i += 1;
            }
            _ => {
                let len = text[i..].chars().next().map_or(1, char::len_utf8);
                if let Some(f) = stack.last_mut() {
                    f.saw(i, i + len);
                }
                // `-` and `?` are indicators only when followed by a space.
                let indicator = matches!(b, b'-' | b'?' | b':')
                    && bytes
                        .get(i + 1)
                        .is_none_or(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'));
                prev = Some(if indicator || (b == b':' && !stack.is_empty()) {
                    b
                } else {
                    b'a'
                });
                i += len;
            }
        }
    }
    found
}

/// One past the closing quote of the quoted scalar opening at `start` (or the end of the
/// text if it never closes).
fn quoted_end(bytes: &[u8], start: usize) -> usize {
    let quote = bytes[start];
    let mut i = start + 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' if quote == b'"' => i += 2,
            b'\'' if quote == b'\'' && bytes.get(i + 1) == Some(&b'\'') => i += 2,
            c if c == quote => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

/// The key of a mapping entry (`key: value`, the key maybe quoted) and where its value
/// starts and ends; `None` when the entry is not `key: value`.
fn split_entry(entry: &str) -> Option<(&str, usize, usize)> {
    let colon = entry.find(':')?;
    let key = entry[..colon]
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    let rest = &entry[colon + 1..];
    if !rest.is_empty() && !rest.starts_with([' ', '\t', '\n', '\r']) {
        return None;
    }
    let start = colon + 1 + (rest.len() - rest.trim_start().len());
    Some((key, start, entry.len()))
}

/// The edit in a flow mapping `f` whose `address:` entry holds `text[pos..pos + len]`.
fn flow_edit(
    text: &str,
    f: &FlowMapping,
    pos: usize,
    len: usize,
    drained: bool,
) -> Option<(Edit, Key)> {
    let entries: Vec<(&str, usize, usize)> = f
        .entries
        .iter()
        .filter_map(|&(s, e)| split_entry(&text[s..e]).map(|(k, vs, ve)| (k, s + vs, s + ve)))
        .collect();
    if entries.len() != f.entries.len() {
        return None;
    }
    // The occurrence is the value of this mapping's `address:`, not of a nested one.
    if !entries
        .iter()
        .any(|&(k, vs, ve)| k == "address" && vs <= pos && pos + len <= ve)
    {
        return None;
    }
    match entries.iter().position(|&(k, _, _)| k == "drain") {
        Some(i) if drained => {
            let (_, vs, ve) = entries[i];
            Some((
                Edit {
                    start: vs,
                    end: ve,
                    with: "true".into(),
                },
                Key::Set(true),
            ))
        }
        Some(i) => {
            // Remove the entry with the comma that joins it to its neighbour.
            let (start, end) = if i > 0 {
                (f.entries[i - 1].1, f.entries[i].1)
            } else {
                (
                    f.entries[0].0,
                    f.entries.get(1).map_or(f.entries[0].1, |n| n.0),
                )
            };
            Some((
                Edit {
                    start,
                    end,
                    with: String::new(),
                },
                Key::Removed,
            ))
        }
        None if drained => {
            let &(_, last_end) = f.entries.last()?;
            Some((
                Edit {
                    start: last_end,
                    end: last_end,
                    with: ", drain: true".into(),
                },
                Key::Set(true),
            ))
        }
        None => None,
    }
}

// ---- Block style: `address: ...` on a line of its own ----

/// One line of the text.
#[derive(Debug, Clone, Copy)]
struct Line<'a> {
    /// Byte offset of its first byte.
    start: usize,
    /// Byte offset one past its end, line break included.
    end: usize,
    /// Its text, without the line break.
    text: &'a str,
}

impl Line<'_> {
    /// Columns of indentation.
    fn indent(&self) -> usize {
        self.text.len() - self.text.trim_start_matches(' ').len()
    }

    /// True for a line with nothing but spaces or a comment.
    fn is_blank(&self) -> bool {
        let t = self.text.trim();
        t.is_empty() || t.starts_with('#')
    }

    /// The column of the mapping key on this line: after the indentation, and after a `- `
    /// sequence entry indicator if there is one.
    fn key_column(&self) -> usize {
        let mut col = self.indent();
        let rest = &self.text[col..];
        if let Some(after) = rest.strip_prefix('-') {
            if after.starts_with(' ') {
                col += 1 + (after.len() - after.trim_start_matches(' ').len());
            }
        }
        col
    }

    /// True when the line starts a sequence entry (`- ...`).
    fn is_dash(&self) -> bool {
        let rest = &self.text[self.indent()..];
        rest == "-" || rest.starts_with("- ")
    }

    /// The line break it ends with (`\n`, `\r\n`, or none at the end of the text).
    fn newline(&self, text: &str) -> &'static str {
        match &text[self.start + self.text.len()..self.end] {
            "\r\n" => "\r\n",
            "\n" => "\n",
            _ => "",
        }
    }
}

/// The lines of `text`.
fn lines(text: &str) -> Vec<Line<'_>> {
    let mut out = Vec::new();
    let mut start = 0;
    for piece in text.split_inclusive('\n') {
        let end = start + piece.len();
        let body = piece.strip_suffix('\n').unwrap_or(piece);
        let body = body.strip_suffix('\r').unwrap_or(body);
        out.push(Line {
            start,
            end,
            text: body,
        });
        start = end;
    }
    out
}

/// If the key at `col` of `line` is `drain`, where its value is (byte offsets) and whether a
/// comment follows it.
fn drain_value(line: &Line<'_>, col: usize) -> Option<(usize, usize, bool)> {
    let rest = line.text.get(col..)?;
    let after = ["drain", "\"drain\"", "'drain'"]
        .iter()
        .find_map(|k| rest.strip_prefix(k))?;
    let after_colon = after.trim_start_matches(' ').strip_prefix(':')?;
    let value = after_colon.trim_start();
    let value_start = line.start + line.text.len() - value.len();
    let (value_text, comment) = match value.find(" #") {
        Some(n) => (&value[..n], true),
        None => (value, false),
    };
    let value_text = value_text.trim_end();
    Some((value_start, value_start + value_text.len(), comment))
}

/// The edit in the block mapping whose `address:` value is at `pos`.
fn block_edit(text: &str, pos: usize, drained: bool) -> Option<(Edit, Key)> {
    let lines = lines(text);
    let at = lines.iter().position(|l| l.start <= pos && pos < l.end)?;
    let line = lines[at];
    let col = line.key_column();
    // The occurrence is this line's `address:` value.
    let before = line.text.get(col..pos - line.start)?;
    let key_and_colon = before
        .trim_end_matches(['"', '\''])
        .trim_end()
        .strip_suffix(':')?;
    if key_and_colon.trim_end().trim_matches(['"', '\'']) != "address" {
        return None;
    }
    // The mapping's other lines: its keys are at `col`; deeper lines are their values.
    let mut keys = vec![at];
    if col == line.indent() {
        // Not the sequence entry's first line: look back for the mapping's start.
        for (i, l) in lines[..at].iter().enumerate().rev() {
            if l.is_blank() || l.indent() > col || (l.indent() == col && l.is_dash()) {
                continue;
            }
            if l.indent() == col || (l.is_dash() && l.key_column() == col) {
                keys.push(i);
            }
            if l.indent() < col {
                break;
            }
        }
    }
    let mut last = at;
    for (i, l) in lines.iter().enumerate().skip(at + 1) {
        if l.is_blank() {
            continue;
        }
        if l.indent() < col {
            break;
        }
        if l.indent() == col && !l.is_dash() {
            keys.push(i);
        }
        last = i;
    }
    let existing = keys
        .iter()
        .find_map(|&i| drain_value(&lines[i], col).map(|v| (i, v)));
    match existing {
        Some((_, (vs, ve, _))) if drained => Some((
            Edit {
                start: vs,
                end: ve,
                with: "true".into(),
            },
            Key::Set(true),
        )),
        Some((i, (vs, ve, comment))) => {
            let l = lines[i];
            if comment || l.is_dash() {
                return Some((
                    Edit {
                        start: vs,
                        end: ve,
                        with: "false".into(),
                    },
                    Key::Set(false),
                ));
            }
            // The whole line; at the end of the text, with the line break before it.
            let start = match l.newline(text) {
                "" if i > 0 => lines[i - 1].start + lines[i - 1].text.len(),
                _ => l.start,
            };
            Some((
                Edit {
                    start,
                    end: l.end,
                    with: String::new(),
                },
                Key::Removed,
            ))
        }
        None if drained => {
            let l = lines[last];
            let own = l.newline(text);
            let nl = [own, line.newline(text)]
                .into_iter()
                .find(|nl| !nl.is_empty())
                .unwrap_or("\n");
            let indent = " ".repeat(col);
            let with = if own.is_empty() {
                format!("{nl}{indent}drain: true")
            } else {
                format!("{indent}drain: true{nl}")
            };
            Some((
                Edit {
                    start: l.end,
                    end: l.end,
                    with,
                },
                Key::Set(true),
            ))
        }
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "az6zyp4pcmodrlstxctjtrfguoofriku52llgrzklo5llznqowspqxad.onion";
    const B: &str = "nbvwr3rbofr42gr47qfcjohqxq75h7xbzi4oywh2rvigbmqmizqjodid";
    const C: &str = "2dkxjvqrzbhmpa7g4a5alvfexuy2w6ld3yfxmpjc6mq6dn3lriadksid.onion";

    /// The first service's instance `n` (from 0).
    fn at(n: usize) -> Place {
        Place {
            service: 0,
            instance: n,
        }
    }

    /// `set_drain` that must change the text.
    fn changed(text: &str, place: Place, drained: bool) -> String {
        match set_drain(text, place, drained) {
            Ok(Outcome::Changed(t)) => t,
            other => panic!("{other:?} for\n{text}"),
        }
    }

    /// The `drain:` of each instance of each service, as the YAML says.
    fn drains(text: &str) -> Vec<Vec<Option<bool>>> {
        let doc: Value = serde_yaml::from_str(text).expect("yaml");
        doc["services"]
            .as_sequence()
            .expect("services")
            .iter()
            .map(|s| {
                s["instances"]
                    .as_sequence()
                    .expect("instances")
                    .iter()
                    .map(|i| i.get("drain").and_then(Value::as_bool))
                    .collect()
            })
            .collect()
    }

    /// The wizard's layout (serde_yaml's: sequences not indented), with comments: the key
    /// goes after the mapping's last line, comments and the rest stay byte for byte, and
    /// undrain gives back the original text.
    #[test]
    fn block_style_as_the_wizard_writes_it() {
        let text = format!(
            "# Written by `onionbalance config`.\n\
             services:\n\
             - key: frontend.key\n  \
               instances:\n  \
               - address: {A}   # rack 1\n    \
                 name: node1\n  \
               # node2 is in the other building\n  \
               - address: {B}\n    \
                 name: node2\n"
        );
        let drained = changed(&text, at(1), true);
        assert_eq!(
            drained,
            text.replace("name: node2\n", "name: node2\n    drain: true\n")
        );
        assert_eq!(drains(&drained), vec![vec![None, Some(true)]]);
        let first = changed(&text, at(0), true);
        assert_eq!(
            first,
            text.replace("name: node1\n", "name: node1\n    drain: true\n")
        );
        assert!(
            first.contains("# rack 1\n") && first.contains("# node2 is in the other building\n")
        );
        assert_eq!(changed(&drained, at(1), false), text);
        assert_eq!(changed(&first, at(0), false), text);
    }

    /// Indented sequences, the address not first, nested values, CRLF and no final line
    /// break.
    #[test]
    fn block_style_variants() {
        let text = format!(
            "services:\n  - key: k\n    instances:\n      - name: web1\n        address: \"{A}\"\n        health-check:\n          port: 80\n      - address: {B}\n"
        );
        let t = changed(&text, at(0), true);
        assert_eq!(
            t,
            text.replace("port: 80\n", "port: 80\n        drain: true\n")
        );
        assert_eq!(changed(&t, at(0), false), text);
        // The last line of the file, without a line break.
        let t = changed(text.trim_end(), at(1), true);
        assert_eq!(t, format!("{}\n        drain: true", text.trim_end()));
        assert_eq!(changed(&t, at(1), false), text.trim_end());
        // CRLF stays CRLF.
        let crlf = text.replace('\n', "\r\n");
        let t = changed(&crlf, at(1), true);
        assert!(
            t.ends_with(&format!("{B}\r\n        drain: true\r\n")),
            "{t:?}"
        );
        assert_eq!(changed(&t, at(1), false), crlf);
    }

    /// A `drain:` already there has its value replaced; one with a comment, or on the
    /// entry's `- ` line, is set to `false` rather than removed.
    #[test]
    fn existing_drain_keys() {
        let text = format!(
            "services:\n- key: k\n  instances:\n  - address: {A}\n    drain: false  # not yet\n  - drain: true\n    address: {B}\n  - address: {C}\n    drain: true   # disk swap, Tuesday\n"
        );
        let t = changed(&text, at(0), true);
        assert_eq!(
            t,
            text.replace("drain: false  # not yet", "drain: true  # not yet")
        );
        let t = changed(&text, at(1), false);
        assert_eq!(t, text.replace("- drain: true\n", "- drain: false\n"));
        let t = changed(&text, at(2), false);
        assert_eq!(
            t,
            text.replace("drain: true   # disk swap", "drain: false   # disk swap")
        );
        assert_eq!(drains(&t), vec![vec![Some(false), Some(true), Some(false)]]);
    }

    /// Flow style: instances as `{...}`, the whole file on one line, a nested flow
    /// mapping, a trailing comma, a multi-line mapping with a comment.
    #[test]
    fn flow_style() {
        let text = format!(
            "services:\n- key: k\n  instances: [{{address: {A}, name: web1}}, {{name: web2, address: '{B}'}}]\n"
        );
        let t = changed(&text, at(1), true);
        assert_eq!(
            t,
            text.replace(&format!("'{B}'}}"), &format!("'{B}', drain: true}}"))
        );
        assert_eq!(changed(&t, at(1), false), text);

        let one_line = format!(
            "{{services: [{{key: k, instances: [{{address: {A}, health-check: {{port: 80}}}}]}}]}}"
        );
        let t = changed(&one_line, at(0), true);
        assert_eq!(
            t,
            one_line.replace("{port: 80}}", "{port: 80}, drain: true}")
        );
        assert_eq!(changed(&t, at(0), false), one_line);

        // `drain` first: removed with the comma after it.
        let first =
            format!("services:\n- key: k\n  instances:\n  - {{drain: true, address: {A}}}\n");
        assert_eq!(
            changed(&first, at(0), false),
            format!("services:\n- key: k\n  instances:\n  - {{address: {A}}}\n")
        );

        let multi = format!(
            "services:\n- key: k\n  instances:\n  - {{\n      address: {A},  # web1\n      name: web1,\n    }}\n"
        );
        let t = changed(&multi, at(0), true);
        assert_eq!(t, multi.replace("name: web1,", "name: web1, drain: true,"));
        assert_eq!(changed(&t, at(0), false), multi);
    }

    /// By place: the same address in two services is edited only where asked.
    #[test]
    fn the_right_service() {
        let text = format!(
            "services:\n- key: k1\n  instances:\n  - address: {A}\n- key: k2\n  instances: [{{address: {A}}}]\n"
        );
        let t = changed(
            &text,
            Place {
                service: 1,
                instance: 0,
            },
            true,
        );
        assert_eq!(drains(&t), vec![vec![None], vec![Some(true)]]);
        let t = changed(&text, at(0), true);
        assert_eq!(drains(&t), vec![vec![Some(true)], vec![None]]);
    }

    /// Already so: nothing to do; `drain: false` counts as not drained.
    #[test]
    fn already_so() {
        let text = format!("services:\n- key: k\n  instances:\n  - address: {A}\n    drain: true\n  - address: {B}\n    drain: false\n  - address: {C}\n");
        assert_eq!(set_drain(&text, at(0), true), Ok(Outcome::Unchanged));
        assert_eq!(set_drain(&text, at(1), false), Ok(Outcome::Unchanged));
        assert_eq!(set_drain(&text, at(2), false), Ok(Outcome::Unchanged));
    }

    /// What cannot be edited safely is refused, and said why: the address in a comment
    /// only, an anchor shared by two services, a place that does not exist.
    #[test]
    fn refusals() {
        // The address is written with an escape: the text never shows it as parsed.
        let escaped = format!(
            "services:\n- key: k\n  instances:\n  - address: \"\\x61{}\"  # {A}\n",
            &A[1..]
        );
        assert!(
            matches!(set_drain(&escaped, at(0), true), Err(EditError::Unsafe(ref m)) if m.contains("not written in a way")),
            "{:?}",
            set_drain(&escaped, at(0), true)
        );
        // One mapping, two places: changing it would drain both.
        let shared = format!(
            "services:\n- key: k1\n  instances:\n  - &web {{address: {A}}}\n- key: k2\n  instances:\n  - *web\n"
        );
        assert!(
            matches!(set_drain(&shared, at(0), true), Err(EditError::Unsafe(ref m)) if m.contains("more than")),
            "{:?}",
            set_drain(&shared, at(0), true)
        );
        let text = format!("services:\n- key: k\n  instances:\n  - address: {A}\n");
        assert!(matches!(
            set_drain(&text, at(3), true),
            Err(EditError::Shape(_))
        ));
        assert!(matches!(
            set_drain("services: [", at(0), true),
            Err(EditError::Shape(_))
        ));
        assert!(matches!(
            set_drain(
                &format!("services:\n- key: k\n  instances:\n  - address: {A}\n    drain: maybe\n"),
                at(0),
                true
            ),
            Err(EditError::Unsafe(_))
        ));
    }

    /// Brackets, commas and quotes inside scalars and comments are not structure.
    #[test]
    fn scanner_ignores_brackets_in_scalars_and_comments() {
        let text = "a: x{y}  # {not, [this\nb: 'q{,}' \nc: {d: \"}\", e: [1, {f: 2}]}\n";
        let maps = flow_mappings(text);
        assert_eq!(maps.len(), 2, "{maps:?}");
        let outer = maps.iter().max_by_key(|m| m.close - m.open).expect("outer");
        let entries: Vec<&str> = outer.entries.iter().map(|&(s, e)| &text[s..e]).collect();
        assert_eq!(entries, ["d: \"}\"", "e: [1, {f: 2}]"]);
    }
}
