//! Frontend identity keys: generate, load, save.
//!
//! The frontend's identity key is the one secret this program holds: whoever has it can
//! publish descriptors for the frontend address. So:
//!
//! * the secret is zeroized when dropped (the types we keep it in, from `ed25519-dalek`,
//!   zeroize on drop) and never appears in `Debug` or `Display` output or in logs;
//! * files we write are created with mode 0600 and never overwritten;
//! * files we read that group or others can read produce a warning naming the `chmod` to run.
//!
//! Two file formats are read, detected by content:
//!
//! * PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), which upstream `onionbalance-config` writes
//!   (an ed25519 seed); this is also the format we write;
//! * C tor's `hs_ed25519_secret_key`: the 32-byte tag `== ed25519v1-secret: type0 ==` padded
//!   with NULs, then the 64-byte *expanded* secret key. It has no seed, so such a key cannot be
//!   turned into PKCS#8; we keep using the file as it is.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::{DecodePrivateKey as _, EncodePrivateKey as _, KeypairBytes};
use tor_hscrypto::pk::HsIdKeypair;
use tor_llcrypto::pk::ed25519;
use zeroize::Zeroizing;

use crate::onion::OnionAddress;

/// The header of a C tor `hs_ed25519_secret_key` file (32 bytes, NUL padded).
const CTOR_SECRET_TAG: &[u8; 32] = b"== ed25519v1-secret: type0 ==\0\0\0";
/// Total length of a C tor `hs_ed25519_secret_key` file.
const CTOR_SECRET_LEN: usize = 32 + 64;

/// Where a key came from, which decides how it can be saved again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyFormat {
    /// PKCS#8 PEM holding an ed25519 seed (upstream Onionbalance's format).
    Pkcs8Pem,
    /// C tor's `hs_ed25519_secret_key` holding an expanded secret key.
    CTorSecretKey,
}

/// Why a key could not be loaded or saved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The file could not be read (or is not a small regular file); the message includes
    /// the cause's.
    #[error("cannot read key file {0}")]
    Read(crate::error::FileError),
    /// The file could not be written.
    #[error("cannot write key file {path}: {source}")]
    Write {
        /// The key file.
        path: PathBuf,
        /// Why the OS could not write it.
        source: std::io::Error,
    },
    /// The file exists already; we never overwrite a key.
    #[error("refusing to overwrite existing key file {0}: move it away first if you really want a new key")]
    Exists(PathBuf),
    /// The file is neither PKCS#8 PEM nor a C tor secret key.
    #[error("{path} is not a key onionbalance understands: expected an ed25519 PKCS#8 PEM file (\"-----BEGIN PRIVATE KEY-----\") or C tor's hs_ed25519_secret_key ({detail})")]
    UnknownFormat {
        /// The key file.
        path: PathBuf,
        /// What the file is instead (empty, a public key file, its length; never its content).
        detail: String,
    },
    /// The PEM file parsed but is not a usable ed25519 key.
    #[error("{path}: not a valid ed25519 PKCS#8 key")]
    BadPkcs8 {
        /// The key file.
        path: PathBuf,
        /// What the PKCS#8 decoder found wrong.
        #[source]
        source: ed25519_dalek::pkcs8::Error,
    },
    /// A PKCS#8 v2 file whose public key is not that of its secret key (a damaged or
    /// tampered file).
    #[error("{0}: the public key in the file does not match its secret key")]
    MismatchedPublicKey(PathBuf),
    /// The key could not be encoded as PKCS#8 (for saving).
    #[error("cannot encode the key as PKCS#8")]
    Encode(#[source] ed25519_dalek::pkcs8::Error),
    /// The C tor file has the right header but an invalid key.
    #[error("{0}: the C tor secret key inside is not a valid ed25519 expanded key")]
    BadCTorKey(PathBuf),
    /// A key read from C tor has no seed and cannot be written as PKCS#8.
    #[error("this key was loaded from a C tor hs_ed25519_secret_key and has no seed, so it cannot be written as PKCS#8; copy the original file instead")]
    NoSeed,
}

/// The secret part of a frontend key, in whichever form we got it.
enum Secret {
    /// An ed25519 seed (PKCS#8); zeroized on drop by `ed25519-dalek`.
    Seed(Box<ed25519::Keypair>),
    /// An expanded key (C tor); zeroized on drop by `ed25519-dalek`.
    Expanded,
}

/// A frontend's identity keypair and the onion address it gives.
///
/// `Debug` shows only the public address and the format; the secret never leaves this type
/// except into Arti's own key types.
pub struct FrontendKey {
    /// The identity keypair as Arti wants it (an expanded ed25519 keypair).
    keypair: HsIdKeypair,
    /// The seed, when we have one (needed to write PKCS#8).
    secret: Secret,
    /// The public onion address.
    address: OnionAddress,
}

impl FrontendKey {
    /// Generates a fresh random identity key.
    pub fn generate<R: rand::Rng + rand::CryptoRng>(rng: &mut R) -> Self {
        Self::from_seed_keypair(ed25519::Keypair::generate(rng))
    }

    /// Builds a key from an ed25519 seed keypair.
    fn from_seed_keypair(kp: ed25519::Keypair) -> Self {
        let expanded = ed25519::ExpandedKeypair::from(&kp);
        let address = OnionAddress::from_public_key(expanded.public());
        FrontendKey {
            keypair: HsIdKeypair::from(expanded),
            secret: Secret::Seed(Box::new(kp)),
            address,
        }
    }

    /// Loads a key from a file in either supported format (see the module docs).
    ///
    /// Logs a warning when the file is readable by group or others.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        warn_if_too_open(path);
        let bytes =
            crate::files::read_regular(path, crate::files::MAX_KEY_LEN).map_err(KeyError::Read)?;
        Self::from_bytes(&bytes, path)
    }

    /// Parses key file contents; `path` is only used in error messages.
    pub fn from_bytes(bytes: &[u8], path: &Path) -> Result<Self, KeyError> {
        if bytes.len() == CTOR_SECRET_LEN && bytes[..32] == CTOR_SECRET_TAG[..] {
            return Self::from_ctor_secret(&bytes[32..], path);
        }
        let text = std::str::from_utf8(bytes).ok().map(str::trim_start);
        match text {
            Some(t) if t.starts_with("-----BEGIN") => Self::from_pkcs8_pem(t, path),
            _ => Err(KeyError::UnknownFormat {
                path: path.to_owned(),
                detail: describe_unknown(bytes),
            }),
        }
    }

    /// Parses a PKCS#8 PEM ed25519 key (v1 without, or v2 with, the public key).
    fn from_pkcs8_pem(text: &str, path: &Path) -> Result<Self, KeyError> {
        let kpb = KeypairBytes::from_pkcs8_pem(text).map_err(|source| KeyError::BadPkcs8 {
            path: path.to_owned(),
            source,
        })?;
        let kp = ed25519::Keypair::from_bytes(&kpb.secret_key);
        if let Some(public) = &kpb.public_key {
            // A v2 file also carries the public key: it must belong to the secret.
            if public.as_ref() != kp.verifying_key().as_bytes() {
                return Err(KeyError::MismatchedPublicKey(path.to_owned()));
            }
        }
        Ok(Self::from_seed_keypair(kp))
    }

    /// Builds a key from the 64-byte expanded secret of a C tor key file.
    fn from_ctor_secret(expanded: &[u8], path: &Path) -> Result<Self, KeyError> {
        let mut sk = Zeroizing::new([0u8; 64]);
        sk.copy_from_slice(expanded);
        let ekp = ed25519::ExpandedKeypair::from_secret_key_bytes(*sk)
            .ok_or_else(|| KeyError::BadCTorKey(path.to_owned()))?;
        let address = OnionAddress::from_public_key(ekp.public());
        Ok(FrontendKey {
            keypair: HsIdKeypair::from(ekp),
            secret: Secret::Expanded,
            address,
        })
    }

    /// The frontend's onion address.
    pub fn address(&self) -> OnionAddress {
        self.address
    }

    /// The identity keypair, for signing (blinded keys are derived from it).
    pub fn keypair(&self) -> &HsIdKeypair {
        &self.keypair
    }

    /// The format this key can be saved in.
    pub fn format(&self) -> KeyFormat {
        match self.secret {
            Secret::Seed(_) => KeyFormat::Pkcs8Pem,
            Secret::Expanded => KeyFormat::CTorSecretKey,
        }
    }

    /// Returns the key as unencrypted PKCS#8 v1 PEM, the format upstream Onionbalance writes.
    pub fn to_pkcs8_pem(&self) -> Result<Zeroizing<String>, KeyError> {
        let Secret::Seed(kp) = &self.secret else {
            return Err(KeyError::NoSeed);
        };
        // v1 (no public key inside), like Python's `cryptography` writes it.
        let kpb = KeypairBytes {
            secret_key: kp.to_bytes(),
            public_key: None,
        };
        kpb.to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .map_err(KeyError::Encode)
    }

    /// Writes the key as PKCS#8 PEM to a new file with mode 0600; never overwrites.
    pub fn save_pem(&self, path: &Path) -> Result<(), KeyError> {
        let pem = self.to_pkcs8_pem()?;
        write_secret_file(path, pem.as_bytes())
    }
}

/// Creates `path` with mode 0600 (failing if it exists) and writes `contents` to it.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists(path.to_owned())
        } else {
            KeyError::Write {
                path: path.to_owned(),
                source,
            }
        }
    })?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .map_err(|source| KeyError::Write {
            path: path.to_owned(),
            source,
        })
}

/// Logs a warning if group or others may read the key file at `path`.
fn warn_if_too_open(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if let Ok(meta) = fs::metadata(path) {
            let mode = meta.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "key file {} has mode {:o}: other users may be able to read the frontend's secret key; run `chmod 600 {}`",
                    path.display(),
                    mode & 0o777,
                    path.display()
                );
            }
        }
    }
}

/// A short, secret-free description of unrecognised key file contents.
fn describe_unknown(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "the file is empty".into()
    } else if bytes.starts_with(b"== ed25519v1-public") {
        "this is a C tor *public* key file; use hs_ed25519_secret_key".into()
    } else if bytes.starts_with(b"== ") {
        format!(
            "a C tor key file of an unexpected kind or length ({} bytes)",
            bytes.len()
        )
    } else {
        format!("{} bytes of unrecognised content", bytes.len())
    }
}

impl fmt::Debug for FrontendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FrontendKey")
            .field("address", &self.address)
            .field("format", &self.format())
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl crate::error::HasKind for KeyError {
    fn kind(&self) -> crate::error::ErrorKind {
        match self {
            KeyError::Read(_) | KeyError::Write { .. } => crate::error::ErrorKind::LocalIo,
            _ => crate::error::ErrorKind::Key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng as _;

    fn fixture(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/keys")
            .join(name)
    }

    /// A PEM written by Python's `cryptography` (as upstream `onionbalance-config` does) loads
    /// and gives the address that Python printed for it.
    #[test]
    fn loads_upstream_pem() {
        let key = FrontendKey::load(&fixture("upstream-onionbalance.pem")).expect("loads");
        let expected =
            fs::read_to_string(fixture("upstream-onionbalance.address")).expect("address");
        assert_eq!(key.address().to_string(), expected.trim());
        assert_eq!(key.format(), KeyFormat::Pkcs8Pem);
    }

    /// A C tor `hs_ed25519_secret_key` loads and gives the address in C tor's `hostname` file.
    #[test]
    fn loads_ctor_secret_key() {
        let key = FrontendKey::load(&fixture("ctor/hs_ed25519_secret_key")).expect("loads");
        let expected = fs::read_to_string(fixture("ctor/hostname")).expect("hostname");
        assert_eq!(key.address().to_string(), expected.trim());
        assert_eq!(key.format(), KeyFormat::CTorSecretKey);
        assert!(matches!(key.to_pkcs8_pem(), Err(KeyError::NoSeed)));
    }

    #[test]
    fn pem_round_trip_is_0600_and_never_overwrites() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k.key");
        let key = FrontendKey::generate(&mut rand::rngs::StdRng::seed_from_u64(7));
        key.save_pem(&path).expect("save");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = FrontendKey::load(&path).expect("load");
        assert_eq!(again.address(), key.address());
        assert!(matches!(key.save_pem(&path), Err(KeyError::Exists(_))));
        // v1 PKCS#8: exactly 48 bytes of DER, as Python writes it
        let pem = key.to_pkcs8_pem().expect("pem");
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        assert_eq!(
            data_encoding::BASE64
                .decode(b64.as_bytes())
                .expect("b64")
                .len(),
            48
        );
    }

    #[test]
    fn debug_does_not_show_the_secret() {
        let key = FrontendKey::generate(&mut rand::rngs::StdRng::seed_from_u64(1));
        let pem = key.to_pkcs8_pem().expect("pem");
        let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let dbg = format!("{key:?}");
        assert!(dbg.contains(&key.address().to_string()));
        assert!(!dbg.contains(&b64[20..40]));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn rejects_garbage_with_clear_errors() {
        let p = Path::new("x.key");
        assert!(matches!(
            FrontendKey::from_bytes(b"", p),
            Err(KeyError::UnknownFormat { .. })
        ));
        assert!(matches!(
            FrontendKey::from_bytes(
                b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
                p
            ),
            Err(KeyError::BadPkcs8 { .. })
        ));
        let mut pubkey = b"== ed25519v1-public: type0 ==\0\0\0".to_vec();
        pubkey.extend_from_slice(&[0; 32]);
        let e = FrontendKey::from_bytes(&pubkey, p).expect_err("public key file");
        assert!(e.to_string().contains("public"), "{e}");
    }
}
