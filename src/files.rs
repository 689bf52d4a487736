//! Reading local files that an operator (or someone with write access to a directory the
//! operator pointed us at) controls: config, keys, authorized-client files.
//!
//! A path can name something other than a small regular file: a symlink to `/dev/zero`
//! (endless), a FIFO (opening it for reading blocks until a writer comes), a sparse file of
//! gigabytes. [`read_regular`] opens without blocking, checks on the open file (so the check
//! and the read are about the same file, whatever happens to the path in between) that it is
//! a regular file within the size limit, and never reads more than the limit.

use std::fmt;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Largest config file read (1 MiB: a config with thousands of backends is a few hundred KB).
pub(crate) const MAX_CONFIG_LEN: u64 = 1 << 20;

/// Largest key file read (4 KiB: keys in every format we read are under 200 bytes).
pub(crate) const MAX_KEY_LEN: u64 = 4 << 10;

/// Why a file could not be read.
#[derive(Debug)]
#[non_exhaustive]
pub enum FileError {
    /// Opening or reading failed.
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The path names a directory, device, FIFO or socket.
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        kind: &'static str,
    },
    /// The file is larger than the limit for its kind.
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit in bytes.
        max: u64,
    },
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let path = match self {
            FileError::Io { path, .. }
            | FileError::NotRegular { path, .. }
            | FileError::TooLarge { path, .. } => path,
        };
        write!(f, "{}: {}", path.display(), self.reason())
    }
}

// The message carries the I/O error's text, so it is not repeated as a source.
impl std::error::Error for FileError {}

impl FileError {
    /// What is wrong, without the path (for messages that name the file themselves).
    pub fn reason(&self) -> String {
        match self {
            FileError::Io { source, .. } => source.to_string(),
            FileError::NotRegular { kind, .. } => {
                format!("it is a {kind}, not a regular file: give the path of the file itself")
            }
            FileError::TooLarge { max, .. } => format!(
                "it is larger than {max} bytes, far more than a file of this kind holds: is it the right file?"
            ),
        }
    }

    /// The I/O error kind, if this is an I/O error (e.g. to tell "not found" apart).
    pub fn io_kind(&self) -> Option<std::io::ErrorKind> {
        match self {
            FileError::Io { source, .. } => Some(source.kind()),
            _ => None,
        }
    }
}

/// Whether `name` is safe as one file name of ours (an instance's directory under
/// `backend --write`, a client's `<name>.auth`): 1 to 63 ASCII letters, digits, `-`, `_` or
/// `.`, not starting with `.` (so never `.`, `..`, a hidden file, a path or a line break).
pub(crate) fn is_safe_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Reads `path` (symlinks followed) if it is a regular file of at most `max` bytes. The bytes
/// are wiped from memory when dropped (key files go through here).
pub(crate) fn read_regular(path: &Path, max: u64) -> Result<Zeroizing<Vec<u8>>, FileError> {
    let io = |source: std::io::Error| FileError::Io {
        path: path.to_owned(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        // A FIFO would block `open` until a writer appears; non-blocking, it opens at once
        // and is refused below.
        options.custom_flags(libc::O_NONBLOCK);
    }
    let file = options.open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let file_type = meta.file_type();
    if !file_type.is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            kind: describe(&file_type),
        });
    }
    if meta.len() > max {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    // The size can change after the check: never read more than the limit allows.
    let mut bytes = Zeroizing::new(Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0)));
    file.take(max.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > max {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
            max,
        });
    }
    Ok(bytes)
}

/// Reads `path` as UTF-8 text under the rules of [`read_regular`].
pub(crate) fn read_regular_text(path: &Path, max: u64) -> Result<Zeroizing<String>, FileError> {
    let bytes = read_regular(path, max)?;
    text_of(path, &bytes)
}

/// `bytes` (read from `path`) as UTF-8 text; the error names the file, not the content.
pub(crate) fn text_of(path: &Path, bytes: &[u8]) -> Result<Zeroizing<String>, FileError> {
    match std::str::from_utf8(bytes) {
        Ok(text) => Ok(Zeroizing::new(text.to_owned())),
        Err(e) => Err(FileError::Io {
            path: path.to_owned(),
            source: std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("not UTF-8 text: {e}"),
            ),
        }),
    }
}

/// A word for what a non-regular file is.
fn describe(t: &std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        if t.is_fifo() {
            return "FIFO";
        }
        if t.is_char_device() {
            return "character device";
        }
        if t.is_block_device() {
            return "block device";
        }
        if t.is_socket() {
            return "socket";
        }
    }
    if t.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn reads_small_regular_files_through_symlinks() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("a");
        std::fs::write(&f, "hello").expect("write");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &link).expect("symlink");
        assert_eq!(&read_regular(&link, 5).expect("read")[..], b"hello");
        assert!(matches!(
            read_regular(&f, 4),
            Err(FileError::TooLarge { max: 4, .. })
        ));
    }

    /// `/dev/zero` behind a symlink, a directory, a FIFO without a writer, and a sparse file of
    /// 3 GB: each refused at once, with nothing read.
    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zero = dir.path().join("key");
        std::os::unix::fs::symlink("/dev/zero", &zero).expect("symlink");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        let sparse = dir.path().join("sparse");
        std::fs::File::create(&sparse)
            .and_then(|f| f.set_len(3 << 30))
            .expect("sparse file");
        let started = Instant::now();
        for (path, expect) in [
            (&zero, "character device"),
            (&fifo, "FIFO"),
            (&dir.path().to_path_buf(), "directory"),
            (&sparse, "larger than"),
        ] {
            let e = read_regular(path, MAX_CONFIG_LEN).expect_err("refused");
            assert!(e.to_string().contains(expect), "{}: {e}", path.display());
        }
        // A hang (the FIFO) or a 3 GB read would take far longer than this.
        assert!(started.elapsed() < Duration::from_secs(5));
    }
}
