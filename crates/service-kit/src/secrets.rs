//! Secrets a service needs from the first start on (API keys, signing secrets): the configured
//! ones, or one generated on first start and stored in the data directory (file mode 0600),
//! so a service is secure by default and keeps its secrets across restarts.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// A secret read from, or generated into, a file.
pub struct Loaded<T> {
    /// The value.
    pub value: T,
    /// Whether it was generated now (print it once).
    pub generated: bool,
}

// The value is a credential: Debug shows only whether it was generated.
impl<T> std::fmt::Debug for Loaded<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loaded")
            .field("value", &"<redacted>")
            .field("generated", &self.generated)
            .finish()
    }
}

/// The trimmed contents of `path`, or, when it is missing or blank, `make()` written to it
/// (mode 0600 on Unix, synced); `true` when it was generated now.
fn read_or_create(path: &Path, make: impl FnOnce() -> String) -> std::io::Result<(String, bool)> {
    match std::fs::read_to_string(path) {
        Ok(s) if !s.trim().is_empty() => return Ok((s.trim().to_owned(), false)),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let value = make();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(value.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    Ok((value, true))
}

/// The configured secrets, each parsed by `parse`; or, when none are configured, the one
/// stored in `file` (made by `generate` and stored if missing), parsed.
///
/// # Errors
///
/// The file cannot be read or written, or a secret does not parse (`InvalidData`,
/// "malformed `what`").
pub fn load<T, E>(
    configured: &[String],
    file: &Path,
    what: &str,
    generate: impl FnOnce() -> String,
    parse: impl Fn(&str) -> Result<T, E>,
) -> std::io::Result<Loaded<Vec<T>>> {
    let invalid =
        |_| std::io::Error::new(std::io::ErrorKind::InvalidData, format!("malformed {what}"));
    if !configured.is_empty() {
        let value = configured
            .iter()
            .map(|s| parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        return Ok(Loaded {
            value,
            generated: false,
        });
    }
    let (secret, generated) = read_or_create(file, generate)?;
    Ok(Loaded {
        value: vec![parse(&secret).map_err(invalid)?],
        generated,
    })
}

/// The API keys: configured ones, or the one stored in `<data_dir>/api_key` (generated if
/// missing: `dk_` and 32 random bytes, URL-safe base64).
///
/// # Errors
///
/// The key file cannot be read or written.
pub fn api_keys(configured: &[String], data_dir: &Path) -> std::io::Result<Loaded<Vec<String>>> {
    load(
        configured,
        &data_dir.join("api_key"),
        "API key",
        || {
            let mut bytes = [0u8; 32];
            rand::rng().fill_bytes(&mut bytes);
            format!("dk_{}", URL_SAFE_NO_PAD.encode(bytes))
        },
        |s| Ok::<_, std::convert::Infallible>(s.to_owned()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = api_keys(&[], dir.path()).unwrap();
        assert!(first.generated);
        assert!(first.value[0].starts_with("dk_"));
        let again = api_keys(&[], dir.path()).unwrap();
        assert!(!again.generated);
        assert_eq!(first.value, again.value);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join("api_key"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let shown = format!("{first:?}");
        assert!(!shown.contains(&first.value[0]), "{shown}");
        let configured = api_keys(&["k1".into(), "k2".into()], dir.path()).unwrap();
        assert!(!configured.generated);
        assert_eq!(configured.value, ["k1", "k2"]);
    }

    #[test]
    fn secrets_are_parsed_whether_configured_generated_or_read() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signing_secret");
        let parse = |s: &str| s.strip_prefix("whsec_").map(str::to_owned).ok_or(());
        let s1 = load(&[], &file, "signing secret", || "whsec_abc".into(), parse).unwrap();
        let s2 = load(&[], &file, "signing secret", || "whsec_xyz".into(), parse).unwrap();
        assert!(s1.generated && !s2.generated);
        assert_eq!(s1.value, ["abc"]);
        assert_eq!(s1.value, s2.value);
        let bad = load(
            &["plain".into()],
            &file,
            "signing secret",
            String::new,
            parse,
        )
        .unwrap_err();
        assert_eq!(bad.kind(), std::io::ErrorKind::InvalidData);
        assert_eq!(bad.to_string(), "malformed signing secret");
        std::fs::write(&file, "garbage\n").unwrap();
        let bad = load(&[], &file, "signing secret", String::new, parse).unwrap_err();
        assert_eq!(bad.kind(), std::io::ErrorKind::InvalidData);
    }
}
