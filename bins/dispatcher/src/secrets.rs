//! Secrets: API keys and signing secrets from the configuration, or generated on first start
//! and stored in the data directory (file mode 0600), so the service is secure by default.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;
use webhook_client::SigningSecret;

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

/// The API keys: configured ones, or the one stored in `<data_dir>/api_key` (generated if missing).
///
/// # Errors
///
/// The key file cannot be read or written.
pub fn api_keys(configured: &[String], data_dir: &Path) -> std::io::Result<Loaded<Vec<String>>> {
    if !configured.is_empty() {
        return Ok(Loaded {
            value: configured.to_vec(),
            generated: false,
        });
    }
    let (key, generated) = read_or_create(&data_dir.join("api_key"), || {
        let mut bytes = [0u8; 32];
        rand::rng().fill_bytes(&mut bytes);
        format!("dk_{}", URL_SAFE_NO_PAD.encode(bytes))
    })?;
    Ok(Loaded {
        value: vec![key],
        generated,
    })
}

/// The signing secrets: configured ones, or the one stored in `<data_dir>/signing_secret`.
///
/// # Errors
///
/// The file cannot be read or written, or holds a malformed secret.
pub fn signing_secrets(
    configured: &[String],
    data_dir: &Path,
) -> std::io::Result<Loaded<Vec<SigningSecret>>> {
    let invalid =
        |_| std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed signing secret");
    if !configured.is_empty() {
        let value = configured
            .iter()
            .map(|s| SigningSecret::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(invalid)?;
        return Ok(Loaded {
            value,
            generated: false,
        });
    }
    let (secret, generated) = read_or_create(&data_dir.join("signing_secret"), || {
        SigningSecret::generate().expose()
    })?;
    Ok(Loaded {
        value: vec![SigningSecret::parse(&secret).map_err(invalid)?],
        generated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_once_then_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let first = api_keys(&[], dir.path()).unwrap();
        assert!(first.generated);
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
        let s1 = signing_secrets(&[], dir.path()).unwrap();
        let s2 = signing_secrets(&[], dir.path()).unwrap();
        assert!(s1.generated && !s2.generated);
        assert_eq!(s1.value, s2.value);
        assert!(s1.value[0].expose().starts_with("whsec_"));
        let shown = format!("{first:?}");
        assert!(!shown.contains(&first.value[0]), "{shown}");
    }
}
