//! Restricted discovery (client authorization): only clients holding one of the configured
//! x25519 keys can read the frontend's intro points.
//!
//! A v3 descriptor's middle layer can carry `auth-client` lines: the key that decrypts the
//! inner layer (the descriptor cookie), encrypted once per authorized client to that client's
//! x25519 public key (rend-spec-v3 §2.5.1.2, "client authorization"). Backends need nothing:
//! the frontend's descriptor is the only one clients read, and it is the frontend that lists
//! the clients.
//!
//! Keys use C tor's formats, so operators and clients keep their tools:
//!
//! * the frontend holds **public** keys, one per client, as `descriptor:x25519:<base32>`,
//!   inline in the config or as `<name>.auth` files in a directory (C tor's
//!   `<HiddenServiceDir>/authorized_clients/`);
//! * a client holds the **private** key as the `.auth_private` line
//!   `<frontend address without .onion>:descriptor:x25519:<base32>` in C tor's
//!   `ClientOnionAuthDir`, or inserted into Arti's keystore.
//!
//! The number of `auth-client` lines tells an observer who can decrypt the middle layer (any
//! client of the service) how many clients there are, so, as C tor does, every descriptor
//! carries the real entries mixed with random ones up to a multiple of
//! [`AUTH_CLIENT_MULTIPLE`] ([`padded_auth_clients`]).

use std::path::{Path, PathBuf};

use rand::seq::SliceRandom as _;
use tor_hscrypto::pk::{HsClientDescEncKey, HsClientDescEncSecretKey};
use tor_llcrypto::pk::curve25519;
use zeroize::Zeroizing;

use crate::onion::OnionAddress;

/// Descriptors list `auth-client` entries in multiples of this (C tor's
/// `HS_DESC_AUTH_CLIENT_MULTIPLE`), real ones mixed with random ones.
pub const AUTH_CLIENT_MULTIPLE: usize = 16;

/// Most authorized clients a descriptor can carry under the network's default size limit
/// (`hsdir_max_desc_size`, 50,000 bytes), and only beside a single intro point: each client
/// costs about 100 bytes of the encoded descriptor. A config with more is refused: no
/// descriptor could list them all, and leaving some out would lock them out silently.
/// (Equal to [`crate::descriptor::clients_that_fit`] for one intro point; a test keeps it so.)
pub const MAX_AUTHORIZED_CLIENTS: usize = 384;

/// Authorized clients that fit beside a full set of 20 intro points (see
/// [`MAX_AUTHORIZED_CLIENTS`]); with more, descriptors list fewer intro points.
pub const CLIENTS_BESIDE_20_INTRO_POINTS: usize = 128;

/// File name extension of a client's public key in an authorized-clients directory (C tor).
pub const AUTH_FILE_EXTENSION: &str = "auth";

/// File name extension of a client's private key in C tor's `ClientOnionAuthDir`.
pub const AUTH_PRIVATE_FILE_EXTENSION: &str = "auth_private";

/// One client allowed to discover a frontend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizedClient {
    /// The operator's name for the client (the file stem for `<name>.auth` files).
    pub name: String,
    /// The client's public key (`KP_hsc_desc_enc`).
    pub key: HsClientDescEncKey,
}

/// Why a client key could not be used.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientKeyError {
    /// A public key is not in C tor's `descriptor:x25519:<base32>` form.
    #[error("not a client public key: {0}; expected `descriptor:x25519:<52 base32 characters>` (the content of a C tor `<name>.auth` file, or the public key an Arti client prints for its own key)")]
    BadPublicKey(String),
    /// The text is a client's *private* key where the public key was expected.
    #[error("this is a client's private key (an `.auth_private` line); the frontend needs only the public key: give `descriptor:x25519:...` derived from it (`onionbalance client-auth add` prints both)")]
    PrivateWherePublicExpected,
    /// A private key is not in C tor's `.auth_private` form.
    #[error("not a client private key: {0}; expected `<onion address without .onion>:descriptor:x25519:<52 base32 characters>` (a C tor `.auth_private` line)")]
    BadPrivateKey(String),
    /// A name that cannot be a file name.
    #[error("client name {0:?} is not usable: use 1 to 63 letters, digits, `-`, `_` or `.`, not starting with `.`")]
    BadName(String),
    /// A key file that could not be read (or is not a small regular file).
    #[error("cannot read client key file {0}")]
    Unreadable(std::sync::Arc<crate::error::FileError>),
}

/// Whether `name` is usable as a client name (and so as the stem of `<name>.auth`): 1 to 63
/// characters from `A-Z a-z 0-9 . _ -`, not starting with a dot.
pub fn valid_client_name(name: &str) -> bool {
    crate::files::is_safe_name(name)
}

/// Parses a client's public key as C tor writes it in `<name>.auth` (and Arti prints it):
/// `descriptor:x25519:<base32>`, base32 in either case, surrounding whitespace ignored.
pub fn parse_public_key(text: &str) -> Result<HsClientDescEncKey, ClientKeyError> {
    let text = text.trim();
    if text.split(':').count() == 4 {
        return Err(ClientKeyError::PrivateWherePublicExpected);
    }
    text.parse::<HsClientDescEncKey>()
        .map_err(|e| ClientKeyError::BadPublicKey(crate::redact::parser_message(&e.to_string())))
}

/// A client's private key, as read from an `.auth_private` line. Zeroized on drop.
pub struct ClientSecret {
    /// The onion service the line is for.
    pub frontend: OnionAddress,
    /// The client's secret key (`KS_hsc_desc_enc`).
    pub secret: HsClientDescEncSecretKey,
}

impl std::fmt::Debug for ClientSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecret")
            .field("frontend", &self.frontend)
            .field("public", &self.public().to_string())
            .finish_non_exhaustive()
    }
}

impl ClientSecret {
    /// Parses an `.auth_private` line: `<address without .onion>:descriptor:x25519:<base32>`.
    pub fn parse(text: &str) -> Result<ClientSecret, ClientKeyError> {
        let text = Zeroizing::new(text.trim().to_owned());
        let parts: Vec<&str> = text.split(':').collect();
        let [addr, "descriptor", "x25519", key] = parts[..] else {
            return Err(ClientKeyError::BadPrivateKey(
                "wrong number of `:`-separated fields or wrong key type".into(),
            ));
        };
        let frontend: OnionAddress = addr
            .parse()
            .map_err(|e| ClientKeyError::BadPrivateKey(format!("address {addr:?} {e}")))?;
        let bytes = Zeroizing::new(
            data_encoding::BASE32_NOPAD
                .decode(key.to_ascii_uppercase().as_bytes())
                .map_err(|_| ClientKeyError::BadPrivateKey("the key is not base32".into()))?,
        );
        let array: [u8; 32] = bytes[..]
            .try_into()
            .map_err(|_| ClientKeyError::BadPrivateKey("the key is not 32 bytes".into()))?;
        let array = Zeroizing::new(array);
        Ok(ClientSecret {
            frontend,
            secret: curve25519::StaticSecret::from(*array).into(),
        })
    }

    /// Reads an `.auth_private` file (a regular file of at most a few KiB).
    pub fn load(path: &Path) -> Result<ClientSecret, ClientKeyError> {
        let text = read_small_file(path)?;
        ClientSecret::parse(&text)
    }

    /// A new random key for `frontend`.
    pub fn generate<R: rand::Rng + rand::CryptoRng>(
        frontend: OnionAddress,
        rng: &mut R,
    ) -> ClientSecret {
        ClientSecret {
            frontend,
            secret: curve25519::StaticSecret::random_from_rng(rng).into(),
        }
    }

    /// The public key the frontend lists for this client.
    pub fn public(&self) -> HsClientDescEncKey {
        HsClientDescEncKey::from(&self.secret)
    }

    /// The `.auth_private` line for C tor's `ClientOnionAuthDir` (and Arti's C tor client
    /// keystore). Secret: zeroized on drop.
    pub fn auth_private_line(&self) -> Zeroizing<String> {
        let bytes = Zeroizing::new(self.secret.as_ref().to_bytes());
        let encoded = Zeroizing::new(data_encoding::BASE32_NOPAD.encode(&bytes[..]));
        let host = self.frontend.to_string();
        let host = host.strip_suffix(".onion").unwrap_or(&host);
        Zeroizing::new(format!("{host}:descriptor:x25519:{}", encoded.as_str()))
    }
}

/// Reads the clients of an authorized-clients directory: every `<name>.auth` file holds one
/// public key (as C tor's `authorized_clients/`); other files are ignored, as C tor does.
///
/// Returns the clients sorted by name, or every problem found (one line per file).
pub fn read_auth_dir(dir: &Path) -> Result<Vec<AuthorizedClient>, Vec<String>> {
    let entries = std::fs::read_dir(dir).map_err(|e| {
        vec![format!(
            "cannot read authorized-clients directory {}: {e} (create it, or remove `authorized-clients-dir:`)",
            dir.display()
        )]
    })?;
    let mut clients = Vec::new();
    let mut problems = Vec::new();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                problems.push(format!("cannot list {}: {e}", dir.display()));
                continue;
            }
        };
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some(AUTH_FILE_EXTENSION) {
            continue;
        }
        let Some(name) = path.file_stem().and_then(|s| s.to_str()).map(str::to_owned) else {
            problems.push(format!("{}: file name is not UTF-8", path.display()));
            continue;
        };
        if !valid_client_name(&name) {
            problems.push(format!(
                "{}: {}",
                path.display(),
                ClientKeyError::BadName(name)
            ));
            continue;
        }
        match read_small_file(&path).and_then(|t| parse_public_key(&t)) {
            Ok(key) => clients.push(AuthorizedClient { name, key }),
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(problems);
    }
    clients.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(clients)
}

/// The file holding client `name`'s public key in authorized-clients directory `dir`.
pub fn auth_file(dir: &Path, name: &str) -> Result<PathBuf, ClientKeyError> {
    if !valid_client_name(name) {
        return Err(ClientKeyError::BadName(name.to_owned()));
    }
    Ok(dir.join(format!("{name}.{AUTH_FILE_EXTENSION}")))
}

/// The `auth-client` keys to put in one descriptor: `real`, plus random keys up to the next
/// multiple of [`AUTH_CLIENT_MULTIPLE`] (at least one multiple), in random order.
///
/// The random entries are encryptions of the descriptor cookie to keys nobody holds, so they
/// look exactly like the real ones, as C tor's random entries do; the order is shuffled so
/// the real ones are not recognisable by position. Called once per descriptor built.
pub fn padded_auth_clients<R: rand::Rng + rand::CryptoRng>(
    real: &[curve25519::PublicKey],
    rng: &mut R,
) -> Vec<curve25519::PublicKey> {
    let target = real
        .len()
        .div_ceil(AUTH_CLIENT_MULTIPLE)
        .max(1)
        .saturating_mul(AUTH_CLIENT_MULTIPLE);
    let mut all = real.to_vec();
    while all.len() < target {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        all.push(curve25519::PublicKey::from(bytes));
    }
    all.shuffle(rng);
    all
}

/// Reads a key file: a small regular file (see [`crate::files`]).
fn read_small_file(path: &Path) -> Result<Zeroizing<String>, ClientKeyError> {
    crate::files::read_regular_text(path, crate::files::MAX_KEY_LEN)
        .map_err(|e| ClientKeyError::Unreadable(std::sync::Arc::new(e)))
}

impl crate::error::HasKind for ClientKeyError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            ClientKeyError::Unreadable(_) => crate::error::ErrorKind::LocalIo,
            _ => crate::error::ErrorKind::Key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn rng() -> rand::rngs::StdRng {
        rand::rngs::StdRng::seed_from_u64(7)
    }

    fn frontend() -> OnionAddress {
        "az6zyp4pcmodrlstxctjtrfguoofriku52llgrzklo5llznqowspqxad"
            .parse()
            .expect("address")
    }

    #[test]
    fn public_key_round_trips_in_both_cases() {
        let secret = ClientSecret::generate(frontend(), &mut rng());
        let text = secret.public().to_string();
        assert!(text.starts_with("descriptor:x25519:"), "{text}");
        assert_eq!(text.len(), "descriptor:x25519:".len() + 52);
        assert_eq!(parse_public_key(&text).expect("upper"), secret.public());
        let lower = format!(
            "  {}\n",
            text.to_lowercase().replace("descriptor:x25519:", "")
        );
        assert_eq!(
            parse_public_key(&format!("descriptor:x25519:{}", lower.trim())).expect("lower"),
            secret.public()
        );
    }

    #[test]
    fn bad_public_keys_say_what_is_expected() {
        for bad in [
            "",
            "descriptor:x25519:",
            "descriptor:ed25519:AAAA",
            "x25519:ZPRRMIV6DV6SJFL7SFBSVLJ5VUNPGCDFEVZ7M23LTLVTCCXJQBKA",
            "descriptor:x25519:ZPRRMIV6DV6SJFL7SFBSVLJ5VUNPGCDFEVZ7M23LTLVTCCXJQB",
            "descriptor:x25519:ZPRRMIV6DV6SJFL7SFBSVLJ5VUNPGCDFEVZ7M23LTLVTCCXJQBK!",
        ] {
            let e = parse_public_key(bad).expect_err(bad);
            assert!(
                e.to_string().contains("descriptor:x25519:<52 base32"),
                "{bad:?}: {e}"
            );
        }
        let private = ClientSecret::generate(frontend(), &mut rng()).auth_private_line();
        assert!(matches!(
            parse_public_key(&private),
            Err(ClientKeyError::PrivateWherePublicExpected)
        ));
    }

    #[test]
    fn private_line_round_trips_and_names_the_frontend() {
        let secret = ClientSecret::generate(frontend(), &mut rng());
        let line = secret.auth_private_line();
        let host = frontend().to_string();
        assert!(line.starts_with(&format!(
            "{}:descriptor:x25519:",
            host.trim_end_matches(".onion")
        )));
        let back = ClientSecret::parse(&format!("{}\n", line.as_str())).expect("parse");
        assert_eq!(back.frontend, frontend());
        assert_eq!(back.public(), secret.public());
        // Debug never shows the secret.
        let dbg = format!("{back:?}");
        assert!(
            !dbg.contains(line.rsplit(':').next().expect("key")),
            "{dbg}"
        );
        for bad in [
            "descriptor:x25519:ZPRRMIV6DV6SJFL7SFBSVLJ5VUNPGCDFEVZ7M23LTLVTCCXJQBKA",
            "nothex:descriptor:x25519:ZPRRMIV6DV6SJFL7SFBSVLJ5VUNPGCDFEVZ7M23LTLVTCCXJQBKA",
        ] {
            assert!(matches!(
                ClientSecret::parse(bad),
                Err(ClientKeyError::BadPrivateKey(_))
            ));
        }
    }

    #[test]
    fn names_are_file_names() {
        for good in ["alice", "Bob-2", "team_a.laptop", &"x".repeat(63)] {
            assert!(valid_client_name(good), "{good}");
        }
        for bad in ["", ".hidden", "a/b", "../x", "a b", "a\nb", &"x".repeat(64)] {
            assert!(!valid_client_name(bad), "{bad:?}");
            assert!(auth_file(Path::new("/d"), bad).is_err());
        }
    }

    #[test]
    fn padding_reaches_a_multiple_of_16_and_keeps_every_real_key() {
        let mut rng = rng();
        for n in [0usize, 1, 2, 15, 16, 17, 40] {
            let real: Vec<curve25519::PublicKey> = (0..n)
                .map(|_| *ClientSecret::generate(frontend(), &mut rng).public())
                .collect();
            let padded = padded_auth_clients(&real, &mut rng);
            assert_eq!(padded.len() % AUTH_CLIENT_MULTIPLE, 0, "n={n}");
            assert!(padded.len() >= n.max(1), "n={n}");
            assert!(padded.len() < n + AUTH_CLIENT_MULTIPLE + 1, "n={n}");
            for k in &real {
                assert_eq!(padded.iter().filter(|p| *p == k).count(), 1, "n={n}");
            }
        }
        // The real keys do not stay in front.
        let real: Vec<curve25519::PublicKey> = (0..3)
            .map(|_| *ClientSecret::generate(frontend(), &mut rng).public())
            .collect();
        let moved = (0..20)
            .filter(|_| padded_auth_clients(&real, &mut rng)[..3] != real[..])
            .count();
        assert!(
            moved >= 19,
            "real entries stayed in front {} times",
            20 - moved
        );
    }

    #[test]
    fn auth_dir_reads_auth_files_and_reports_bad_ones() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = ClientSecret::generate(frontend(), &mut rng());
        let b = ClientSecret::generate(frontend(), &mut rand::rngs::StdRng::seed_from_u64(8));
        std::fs::write(dir.path().join("bob.auth"), format!("{}\n", b.public())).expect("w");
        std::fs::write(dir.path().join("alice.auth"), a.public().to_string()).expect("w");
        std::fs::write(dir.path().join("README"), "not a key").expect("w");
        let clients = read_auth_dir(dir.path()).expect("valid");
        let names: Vec<&str> = clients.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(clients[0].key, a.public());

        std::fs::write(dir.path().join("carol.auth"), "descriptor:x25519:nope").expect("w");
        std::fs::create_dir(dir.path().join("dave.auth")).expect("mkdir");
        let problems = read_auth_dir(dir.path()).expect_err("bad files");
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(problems[0].contains("carol.auth") && problems[0].contains("base32"));
        assert!(problems[1].contains("dave.auth") && problems[1].contains("not a regular file"));

        let missing = read_auth_dir(&dir.path().join("nope")).expect_err("missing");
        assert!(missing[0].contains("create it"), "{missing:?}");
    }
}
