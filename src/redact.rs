//! Keeping file contents out of error messages.
//!
//! An operator who passes a key file where a config is expected (`-c frontend.key`, an
//! `.auth_private` file as `--arti-config`) must not find the key in the journal. Parsers
//! quote what they could not read — serde's "invalid type: string \"…\"", the TOML parser's
//! excerpt of the offending line — so no parser message is shown as it is: every message that
//! comes from parsing a file goes through [`parser_message`] first, and a file that looks like
//! key material is named as such ([`key_material`]) before any parser sees it.

/// What kind of key material `text` looks like, if any: a description for an error message
/// ("a PKCS#8 private key (PEM)"), never the content.
///
/// Recognised: PEM blocks (a frontend key as upstream writes it, or any other), C tor's
/// `hs_ed25519_secret_key` and `hs_ed25519_public_key` files, a client's `.auth_private`
/// line and a client's `.auth` public key.
pub(crate) fn key_material(text: &[u8]) -> Option<&'static str> {
    const CTOR_SECRET: &[u8] = b"== ed25519v1-secret";
    const CTOR_PUBLIC: &[u8] = b"== ed25519v1-public";
    if text.starts_with(CTOR_SECRET) {
        return Some("a C tor onion service secret key (hs_ed25519_secret_key)");
    }
    if text.starts_with(CTOR_PUBLIC) {
        return Some("a C tor onion service public key (hs_ed25519_public_key)");
    }
    let text = String::from_utf8_lossy(text);
    let trimmed = text.trim();
    if trimmed.starts_with("-----BEGIN ") {
        return Some(if trimmed.contains("PRIVATE KEY") {
            "a private key (PEM)"
        } else {
            "a PEM file (a key or certificate)"
        });
    }
    if trimmed.lines().count() == 1 {
        let fields: Vec<&str> = trimmed.split(':').collect();
        match fields[..] {
            [_, "descriptor", "x25519", _] => {
                return Some("a client's private key (an .auth_private line)")
            }
            ["descriptor", "x25519", _] => return Some("a client's public key (an .auth file)"),
            _ => {}
        }
    }
    None
}

/// Quoted spans longer than this in backticks are dropped; shorter ones are field and
/// variant names, which say what was wrong.
const MAX_BACKTICK_SPAN: usize = 32;

/// A parser's message without the content it quotes: every `"…"` span becomes `"…"`, long
/// `` `…` `` spans likewise, and lines of a source excerpt (`12 | text`) are dropped.
///
/// What stays is what the parser found wrong and where (line, column, expected type).
pub(crate) fn parser_message(message: &str) -> String {
    let kept: Vec<&str> = message
        .lines()
        .filter(|line| !is_excerpt_line(line))
        .collect();
    scrub_quotes(kept.join(" ").trim())
}

/// True for the lines of a source excerpt as the TOML parser draws it: `  |`, `1 | text`,
/// `  |     ^`.
fn is_excerpt_line(line: &str) -> bool {
    let t = line.trim_start();
    match t.split_once('|') {
        Some((prefix, _)) => prefix.trim().chars().all(|c| c.is_ascii_digit()),
        None => false,
    }
}

/// Replaces the inside of `"…"` spans (with backslash escapes) and of long `` `…` `` spans.
fn scrub_quotes(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for inner in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if inner == '\\' {
                        escaped = true;
                    } else if inner == '"' {
                        break;
                    }
                }
                out.push_str("\"…\"");
            }
            '`' => {
                let span: String = chars.by_ref().take_while(|&x| x != '`').collect();
                if span.chars().count() > MAX_BACKTICK_SPAN {
                    out.push_str("`…`");
                } else {
                    out.push('`');
                    out.push_str(&span);
                    out.push('`');
                }
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_quotes_are_dropped_field_names_kept() {
        let m = "invalid type: string \"-----BEGIN PRIVATE KEY----- MC4CAQ\\\"AwBQYDK2Vw\", expected struct RawConfig at line 1 column 1";
        let out = parser_message(m);
        assert!(!out.contains("MC4C"), "{out}");
        assert!(
            out.contains("expected struct RawConfig at line 1 column 1"),
            "{out}"
        );
        let m = "services[0]: unknown field `instance`, expected `key` or `instances`";
        assert_eq!(parser_message(m), m);
        let long = format!("unknown variant `{}`", "x".repeat(40));
        assert_eq!(parser_message(&long), "unknown variant `…`");
    }

    #[test]
    fn toml_excerpts_are_dropped() {
        let m = "TOML parse error at line 2, column 1\n  |\n2 | MC4CAQAwBQYDK2VwBCIEIA\n  | ^\nexpected `.`, `=`\n";
        let out = parser_message(m);
        assert!(!out.contains("MC4C"), "{out}");
        assert_eq!(
            out,
            "TOML parse error at line 2, column 1 expected `.`, `=`"
        );
    }

    #[test]
    fn key_files_are_recognised() {
        let pem =
            b"-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIA==\n-----END PRIVATE KEY-----\n";
        assert_eq!(key_material(pem), Some("a private key (PEM)"));
        let mut ctor = b"== ed25519v1-secret: type0 ==\0\0\0".to_vec();
        ctor.extend([7u8; 64]);
        assert!(key_material(&ctor).is_some_and(|k| k.contains("secret key")));
        let private = format!("{}:descriptor:x25519:{}\n", "a".repeat(56), "B".repeat(52));
        assert!(key_material(private.as_bytes()).is_some_and(|k| k.contains("private")));
        let public = format!("descriptor:x25519:{}", "B".repeat(52));
        assert!(key_material(public.as_bytes()).is_some_and(|k| k.contains("public")));
        assert_eq!(key_material(b"services:\n- key: a.key\n"), None);
        assert_eq!(key_material(b"[storage]\ncache_dir = \"x\"\n"), None);
    }
}
