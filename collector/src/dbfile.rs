//! Opening the collector's redb files (`store.redb`, `policy.redb`, `actions.redb`) so that an
//! empty or damaged file stops the start with a message naming the file and what to do,
//! instead of a silent fresh start (redb turns a zero-length file into a new, empty database)
//! or a panic.

use std::path::{Path, PathBuf};

use redb::{Builder, Database, DatabaseError, StorageError};

/// A redb file that cannot be used as it is.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}. {advice}", path.display())]
pub struct DbFileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    pub problem: String,
    /// What the user can do, including whether its data can be recovered.
    pub advice: String,
    /// Whether the file itself is damaged (as opposed to, say, a permission or disk error).
    pub damaged: bool,
}

/// Opens (or, when it does not exist, creates) the redb database at `path` with `builder`.
///
/// * A zero-length file is refused: it cannot hold data, and opening it would silently start
///   from nothing where data was expected (a truncated copy, a full disk at creation).
/// * A file redb cannot read or repair is refused with the error and how to start over.
/// * redb repairs a file that was not closed cleanly (a crash) on its own; that is logged.
pub fn open(path: &Path, builder: &mut Builder) -> Result<Database, DbFileError> {
    let shown = path.display().to_string();
    let aside = format!("mv {shown} {shown}.bad");
    match std::fs::metadata(path) {
        Ok(m) if m.len() == 0 => {
            return Err(DbFileError {
                path: path.to_owned(),
                problem: "the file is empty (0 bytes), so it holds no data".into(),
                advice: format!(
                    "Nothing in it can be recovered. If you expected data here, restore the file \
                     from a backup; otherwise move it aside (`{aside}`) and start again to \
                     create a new one"
                ),
                damaged: true,
            });
        }
        _ => {}
    }
    let file = path.to_owned();
    let told = std::sync::atomic::AtomicBool::new(false);
    builder.set_repair_callback(move |_session| {
        if !told.swap(true, std::sync::atomic::Ordering::Relaxed) {
            tracing::warn!(file = %file.display(), "Repairing a database that was not closed cleanly.");
        }
    });
    // redb reads headers and pages from the file; a damaged file must not take the
    // collector down with a panic, whatever redb does with it.
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.create(path)));
    let damaged = |problem: String| DbFileError {
        path: path.to_owned(),
        problem,
        advice: format!(
            "The file is damaged and redb could not repair it, so its data cannot be recovered \
             by the collector. Keep a copy for inspection, move it aside (`{aside}`) and start \
             again to create a new, empty one, or restore it from a backup"
        ),
        damaged: true,
    };
    match opened {
        Ok(Ok(db)) => Ok(db),
        Ok(Err(DatabaseError::Storage(StorageError::Corrupted(why)))) => {
            Err(damaged(format!("not a readable database ({why})")))
        }
        // redb says "not a redb database" (a bad magic number) as invalid data.
        Ok(Err(DatabaseError::Storage(StorageError::Io(e))))
            if e.kind() == std::io::ErrorKind::InvalidData =>
        {
            Err(damaged(format!("not a readable database ({e})")))
        }
        Ok(Err(DatabaseError::UpgradeRequired(v))) => Err(damaged(format!(
            "written in database file format {v}, which this redb cannot read"
        ))),
        Ok(Err(DatabaseError::RepairAborted)) => {
            Err(damaged("repair of the file was aborted".into()))
        }
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => Err(DbFileError {
            path: path.to_owned(),
            problem: "the database is already open".into(),
            advice: "Another collector is probably running on this data directory; stop it or \
                     use another --data-dir"
                .into(),
            damaged: false,
        }),
        Ok(Err(e)) => Err(DbFileError {
            path: path.to_owned(),
            problem: format!("cannot open: {e}"),
            advice: "Check the file's permissions and the free space of its filesystem; the \
                     file itself was not found damaged"
                .into(),
            damaged: false,
        }),
        Err(_) => Err(damaged("redb failed while reading it".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_and_garbage_files_are_refused_with_advice() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("store.redb");
        std::fs::write(&empty, b"").unwrap();
        let e = open(&empty, &mut Database::builder()).unwrap_err();
        assert!(e.damaged);
        let text = e.to_string();
        assert!(text.contains("store.redb: the file is empty (0 bytes)"), "{text}");
        assert!(text.contains("store.redb.bad"), "{text}");

        let junk = dir.path().join("policy.redb");
        std::fs::write(&junk, vec![0x5au8; 64 * 1024]).unwrap();
        let e = open(&junk, &mut Database::builder()).unwrap_err();
        assert!(e.damaged, "{e}");
        assert!(e.to_string().contains("policy.redb"), "{e}");

        let fresh = dir.path().join("actions.redb");
        open(&fresh, &mut Database::builder()).unwrap();
        assert!(fresh.exists());
    }
}
