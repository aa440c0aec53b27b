//! Refusing a damaged database instead of starting empty, and consistent copies of a live one.
//!
//! SQLite is forgiving where a task store must not be: a WAL whose header is damaged is
//! silently ignored (and then overwritten), and a missing or 0-byte database file next to a
//! WAL is a fresh empty database. Either way a service would start with no tasks and no
//! warning, and the next write destroys what the WAL held. So before opening, the files are
//! checked ([`check_files`]); after opening, `PRAGMA quick_check` must answer `ok`
//! ([`quick_check`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use rusqlite::{Connection, OpenFlags};

use super::codec::db_err;
use crate::error::StoreError;
use crate::store::StoreResult;

/// A WAL file's magic number (the low bit is the checksum's byte order).
const WAL_MAGIC: u32 = 0x377f_0682;
/// A WAL header's length.
const WAL_HEADER: usize = 32;

/// `PATH-wal`, SQLite's write-ahead log beside the database file `PATH`.
fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

/// A damaged-database error, with what to do about it.
fn damaged(path: &Path, what: impl std::fmt::Display) -> StoreError {
    StoreError::backend(format!(
        "database {} is damaged: {what}; refusing to start on it (restore it from a backup, \
         see the README's Backups section)",
        path.display()
    ))
}

/// Checks the files before SQLite opens them: a WAL with content needs its database file,
/// and its header must be one SQLite would read (else SQLite ignores the log, and the tasks
/// in it, without a word).
pub(super) fn check_files(path: &Path) -> StoreResult<()> {
    let wal = wal_path(path);
    let wal_len = std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0);
    if wal_len == 0 {
        return Ok(());
    }
    let db_len = std::fs::metadata(path).map(|m| m.len()).ok();
    match db_len {
        None => {
            return Err(damaged(
                path,
                format_args!(
                    "the file is missing but its WAL {} holds {wal_len} bytes",
                    wal.display()
                ),
            ));
        }
        Some(0) => {
            return Err(damaged(
                path,
                format_args!(
                    "the file is empty but its WAL {} holds {wal_len} bytes",
                    wal.display()
                ),
            ));
        }
        Some(_) => {}
    }
    let mut header = [0u8; WAL_HEADER];
    let read = std::fs::File::open(&wal).and_then(|mut f| {
        use std::io::Read as _;
        f.read_exact(&mut header)
    });
    if read.is_err() {
        return Err(damaged(
            path,
            format_args!("its WAL {} is shorter than a WAL header", wal.display()),
        ));
    }
    if !wal_header_is_valid(&header) {
        return Err(damaged(
            path,
            format_args!("the header of its WAL {} is corrupt", wal.display()),
        ));
    }
    Ok(())
}

/// Whether a WAL header has SQLite's magic number and a matching checksum (the format is in
/// <https://www.sqlite.org/fileformat2.html#walformat>).
fn wal_header_is_valid(header: &[u8; WAL_HEADER]) -> bool {
    let word =
        |i: usize| u32::from_be_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let magic = word(0);
    if magic & !1 != WAL_MAGIC {
        return false;
    }
    // Checksum of the first 24 bytes, read as 32-bit words in the byte order the magic names.
    let native_words = magic & 1 == 1;
    let (mut s0, mut s1) = (0u32, 0u32);
    for pair in header[..24].chunks_exact(8) {
        let read = |b: &[u8]| {
            let bytes = [b[0], b[1], b[2], b[3]];
            if native_words {
                u32::from_be_bytes(bytes)
            } else {
                u32::from_le_bytes(bytes)
            }
        };
        s0 = s0.wrapping_add(read(&pair[..4])).wrapping_add(s1);
        s1 = s1.wrapping_add(read(&pair[4..])).wrapping_add(s0);
    }
    s0 == word(24) && s1 == word(28)
}

/// Runs `PRAGMA quick_check` and logs how long it took; anything but `ok` is an error.
pub(super) fn quick_check(conn: &Connection, path: &Path) -> StoreResult<()> {
    let started = Instant::now();
    let mut stmt = conn
        .prepare("PRAGMA quick_check")
        .map_err(|e| damaged(path, e))?;
    let problems: Vec<String> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .and_then(|rows| rows.collect())
        .map_err(|e| damaged(path, e))?;
    if problems.len() != 1 || problems[0] != "ok" {
        let shown: Vec<&str> = problems.iter().take(5).map(String::as_str).collect();
        return Err(damaged(
            path,
            format_args!("quick_check found: {}", shown.join("; ")),
        ));
    }
    tracing::info!(
        path = %path.display(),
        took_ms = started.elapsed().as_millis() as u64,
        "sqlite quick_check passed"
    );
    Ok(())
}

/// What [`backup`] copied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The copy.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The tasks in it.
    pub tasks: u64,
}

/// Writes a consistent copy of the SQLite database at `source` to `dest` (a new file) with
/// `VACUUM INTO`, safe while a service has the database open: the copy is one read
/// transaction, so it holds every task committed before it began and nothing half-written.
/// The copy is checked (`quick_check`) before this returns.
///
/// Restore by stopping the service and putting the copy in place of the database file (and
/// removing any `-wal` and `-shm` files beside it).
///
/// # Errors
///
/// [`StoreError::Backend`] when `source` is missing or damaged, `dest` exists, or the copy
/// cannot be written.
pub fn backup(source: &Path, dest: &Path) -> StoreResult<BackupReport> {
    if dest.exists() {
        return Err(StoreError::backend(format!(
            "{} exists; a backup is written to a new file",
            dest.display()
        )));
    }
    check_files(source)?;
    // Read-write without create: a missing file is an error, and a reader of a WAL database
    // may need to create its `-shm` index.
    let conn = Connection::open_with_flags(
        source,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::backend(format!("cannot open {}: {e}", source.display())))?;
    conn.busy_timeout(std::time::Duration::from_secs(10))
        .map_err(db_err)?;
    let dest_text = dest
        .to_str()
        .ok_or_else(|| StoreError::backend("the backup path is not UTF-8"))?;
    conn.execute("VACUUM INTO ?1", [dest_text])
        .map_err(|e| StoreError::backend(format!("backup to {} failed: {e}", dest.display())))?;
    drop(conn);
    let copy =
        Connection::open_with_flags(dest, OpenFlags::SQLITE_OPEN_READ_ONLY).map_err(db_err)?;
    quick_check(&copy, dest)?;
    let tasks: i64 = copy
        .query_row("SELECT COUNT(*) FROM tasks", [], |r| r.get(0))
        .map_err(db_err)?;
    let bytes = std::fs::metadata(dest).map_err(StoreError::backend)?.len();
    Ok(BackupReport {
        path: dest.to_owned(),
        bytes,
        tasks: u64::try_from(tasks).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A header SQLite wrote (little-endian checksums, page size 4096).
    fn sqlite_written_header() -> [u8; WAL_HEADER] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        conn.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        conn.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);")
            .unwrap();
        let bytes = std::fs::read(wal_path(&path)).unwrap();
        bytes[..WAL_HEADER].try_into().unwrap()
    }

    #[test]
    fn a_header_sqlite_wrote_is_valid_and_any_flipped_bit_is_not() {
        let header = sqlite_written_header();
        assert!(wal_header_is_valid(&header));
        for byte in 0..WAL_HEADER {
            let mut bad = header;
            bad[byte] ^= 0x10;
            assert!(
                !wal_header_is_valid(&bad),
                "byte {byte} flipped still valid"
            );
        }
    }
}
