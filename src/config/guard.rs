//! Limits on what a YAML text may cost before it is turned into a config.
//!
//! YAML can make a small file expensive. An alias (`*a`) repeats its anchor wherever it
//! appears, so a 32 KB file whose anchor is referenced thousands of times expands to
//! gigabytes; and the YAML parser itself (libyaml, under `serde_yaml`) takes quadratic time
//! on deeply nested flow collections (`[[[[...` or `{a: {a: ...`). A config has a few levels
//! and a few thousand values at most, so both are refused, before anything is built:
//!
//! * [`flow_depth`] scans the text for flow collections nested deeper than
//!   [`MAX_FLOW_DEPTH`], in linear time, before the parser sees it;
//! * [`within_budget`] walks the document as the parser expands it (aliases included)
//!   without keeping anything, and stops as soon as it holds more than [`MAX_NODES`] values,
//!   more than [`MAX_SCALAR_BYTES`] of text in them, or is nested deeper than [`MAX_DEPTH`].

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, Error as _, MapAccess, SeqAccess, Visitor};

/// Deepest nesting of flow collections (`[`, `{`) accepted in the text.
pub(super) const MAX_FLOW_DEPTH: usize = 32;
/// Deepest nesting of collections accepted in the document.
pub(super) const MAX_DEPTH: usize = 32;
/// Most values (scalars and collections, aliases expanded) a config document may hold: a
/// service with 10,000 backends and 1,000 clients needs about 35,000.
pub(super) const MAX_NODES: usize = 200_000;
/// Most bytes of text in all scalars together, aliases expanded: four times the largest file.
pub(super) const MAX_SCALAR_BYTES: usize = 4 << 20;

/// The line (1-based) where flow collections first nest deeper than [`MAX_FLOW_DEPTH`], if
/// they do. Brackets in quoted strings and comments are not counted; brackets in plain or
/// block scalars are (a config never needs 32 of them unclosed), so this never lets a deep
/// document through.
pub(super) fn flow_depth(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut quote: Option<char> = None;
    let mut escaped = false;
    let mut comment = false;
    let mut prev = '\n';
    for c in text.chars() {
        if c == '\n' {
            line += 1;
            // Quoted scalars may span lines: a quote stays open across them.
            comment = false;
            prev = c;
            continue;
        }
        if comment {
            continue;
        }
        match quote {
            Some('"') => {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    quote = None;
                }
            }
            Some(_) => {
                // Single quotes: '' is an escaped quote, which closing and reopening models.
                if c == '\'' {
                    quote = None;
                }
            }
            None => match c {
                '"' | '\'' => quote = Some(c),
                '#' if prev.is_whitespace() => comment = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > MAX_FLOW_DEPTH {
                        return Some(line);
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            },
        }
        prev = c;
    }
    None
}

/// Walks the document in `deserializer` within the limits, keeping nothing; the error names
/// the limit that was hit.
pub(super) fn within_budget<'de, D: Deserializer<'de>>(deserializer: D) -> Result<(), D::Error> {
    let budget = Budget {
        nodes: Cell::new(0),
        bytes: Cell::new(0),
    };
    Walk {
        budget: &budget,
        depth: 0,
    }
    .deserialize(deserializer)
}

/// What the document has cost so far.
struct Budget {
    /// Values seen.
    nodes: Cell<usize>,
    /// Scalar bytes seen.
    bytes: Cell<usize>,
}

/// One value of the document, at a depth.
#[derive(Clone, Copy)]
struct Walk<'b> {
    /// The shared budget.
    budget: &'b Budget,
    /// Nesting depth of this value.
    depth: usize,
}

impl Walk<'_> {
    /// Counts one value with `bytes` of text.
    fn count<E: serde::de::Error>(&self, bytes: usize) -> Result<(), E> {
        let nodes = self.budget.nodes.get() + 1;
        let total = self.budget.bytes.get().saturating_add(bytes);
        self.budget.nodes.set(nodes);
        self.budget.bytes.set(total);
        if nodes > MAX_NODES {
            return Err(E::custom(format!(
                "the document holds more than {MAX_NODES} values (aliases expanded): a config is far smaller; are aliases (`*name`) repeating a large anchor?"
            )));
        }
        if total > MAX_SCALAR_BYTES {
            return Err(E::custom(format!(
                "the document holds more than {MAX_SCALAR_BYTES} bytes of text (aliases expanded): a config is far smaller; are aliases (`*name`) repeating a large anchor?"
            )));
        }
        if self.depth > MAX_DEPTH {
            return Err(E::custom(format!(
                "the document nests deeper than {MAX_DEPTH} levels: a config needs a few"
            )));
        }
        Ok(())
    }

    /// The walk of a value inside this one.
    fn child(&self) -> Self {
        Walk {
            budget: self.budget,
            depth: self.depth + 1,
        }
    }
}

impl<'de> DeserializeSeed<'de> for Walk<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Walk<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<(), E> {
        self.count(1)
    }
    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<(), E> {
        self.count(8)
    }
    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<(), E> {
        self.count(8)
    }
    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<(), E> {
        self.count(8)
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        self.count(v.len())
    }
    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<(), E> {
        self.count(v.len())
    }
    fn visit_unit<E: serde::de::Error>(self) -> Result<(), E> {
        self.count(0)
    }
    fn visit_none<E: serde::de::Error>(self) -> Result<(), E> {
        self.count(0)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        self.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.count(0)?;
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.count(0)?;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }
    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // Tagged values (`!tag value`): count the value.
        use serde::de::VariantAccess as _;
        let ((), variant) = data.variant_seed(self.child())?;
        variant
            .newtype_variant_seed(self.child())
            .map_err(|_: A::Error| A::Error::custom("unsupported YAML tag"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(text: &str) -> Result<(), serde_yaml::Error> {
        within_budget(serde_yaml::Deserializer::from_str(text))
    }

    #[test]
    fn ordinary_configs_pass() {
        let yaml = "services:\n- key: k # a [comment\n  instances:\n  - address: 'a[b'\n    name: \"x{\\\"\"\n  - {address: b, name: [c]}\n";
        assert_eq!(flow_depth(yaml), None);
        budget(yaml).expect("within budget");
    }

    #[test]
    fn deep_flow_nesting_is_found_by_line() {
        let deep = format!("services:\n  x: {}", "[".repeat(100_000));
        assert_eq!(flow_depth(&deep), Some(2));
        let deep_maps = format!("a:\n\n {}", "{a: ".repeat(40));
        assert_eq!(flow_depth(&deep_maps), Some(3));
        assert_eq!(flow_depth(&"[".repeat(MAX_FLOW_DEPTH)), None);
    }

    #[test]
    fn alias_fan_out_is_stopped() {
        // One anchor of 1,000 values referenced 1,000 times: a million values.
        let anchor: Vec<String> = (0..1000).map(|i| format!("v{i}")).collect();
        let mut yaml = format!("a: &big [{}]\nb: [", anchor.join(", "));
        yaml.push_str(&vec!["*big"; 1000].join(", "));
        yaml.push_str("]\n");
        let e = budget(&yaml).expect_err("fan-out");
        assert!(e.to_string().contains("aliases"), "{e}");
        // A long string repeated: bytes, not values.
        let long = "x".repeat(100_000);
        let yaml = format!("a: &s {long}\nb: [{}]\n", vec!["*s"; 100].join(", "));
        let e = budget(&yaml).expect_err("bytes");
        assert!(e.to_string().contains("bytes of text"), "{e}");
    }

    #[test]
    fn deep_block_nesting_is_stopped() {
        let mut yaml = String::new();
        for i in 0..60 {
            yaml.push_str(&" ".repeat(i));
            yaml.push_str("a:\n");
        }
        yaml.push_str(&" ".repeat(60));
        yaml.push_str("b\n");
        let e = budget(&yaml).expect_err("deep");
        assert!(e.to_string().contains("deeper"), "{e}");
    }
}
