//! One writer per work dir: `WORK_DIR/.lock`, created exclusively (`O_EXCL`) by the run that trains there,
//! holding `pid=<pid>` and `host=<hostname>`, removed when the run ends.
//!
//! A second run in the same work dir is refused, naming the holder. A lock left behind by a run that was killed
//! is taken over, with a message, when it names this host and a process that no longer exists (checked through
//! `/proc`; where `/proc` is missing, or the lock names another host, it is never taken over: remove the file
//! by hand once the holder is known to be gone).

use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the lock file inside the work dir.
pub const LOCK_FILE: &str = ".lock";

/// Why the work dir cannot be locked.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another run holds the lock.
    #[error(
        "work dir {dir} is in use by another training run ({holder}, lock file {path}); wait for it to end or \
         choose another --work-dir (if that run is gone, remove the lock file)"
    )]
    Held {
        /// The work dir.
        dir: PathBuf,
        /// The lock file.
        path: PathBuf,
        /// Who holds it, as written in the lock (`pid=.. host=..`).
        holder: String,
    },
    /// The lock file cannot be created or read.
    #[error("work dir lock {path}: {source}")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

impl LockError {
    /// Whether another run holds the lock (bad usage) rather than a file system failure.
    pub fn is_held(&self) -> bool {
        matches!(self, Self::Held { .. })
    }
}

/// The holder of a lock, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Holder {
    pid: Option<u32>,
    host: String,
}

impl Holder {
    fn me() -> Self {
        Self {
            pid: Some(std::process::id()),
            host: hostname(),
        }
    }

    fn parse(text: &str) -> Self {
        let field = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().to_string())
        };
        Self {
            pid: field("pid=").and_then(|p| p.parse().ok()),
            host: field("host=").unwrap_or_default(),
        }
    }

    fn describe(&self) -> String {
        let pid = self.pid.map_or("?".to_string(), |p| p.to_string());
        format!("pid {pid} on host {}", self.host)
    }

    /// A holder known to be gone: same host, `/proc` readable, and no process with its pid.
    fn is_dead_here(&self) -> bool {
        let Some(pid) = self.pid else { return false };
        self.host == hostname()
            && Path::new("/proc/self").exists()
            && !Path::new(&format!("/proc/{pid}")).exists()
    }
}

/// The name of this machine (`/proc/sys/kernel/hostname`, `/etc/hostname` or `$HOSTNAME`), `unknown` if none.
pub fn hostname() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".into())
}

/// The work dir lock of this process; the file is removed on drop.
#[derive(Debug)]
pub struct WorkDirLock {
    path: PathBuf,
}

impl WorkDirLock {
    /// Lock `work_dir` (which must exist). Returns the lock and, when a stale lock of a dead run was taken
    /// over, a message saying so.
    pub fn acquire(work_dir: &Path) -> Result<(Self, Option<String>), LockError> {
        let path = work_dir.join(LOCK_FILE);
        let io = |source| LockError::Io {
            path: path.clone(),
            source,
        };
        let mut took_over = None;
        // two rounds at most: the first may find a stale lock and remove it
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut f) => {
                    let me = Holder::me();
                    let text = format!("pid={}\nhost={}\n", std::process::id(), me.host);
                    f.write_all(text.as_bytes())
                        .and_then(|()| f.sync_all())
                        .map_err(io)?;
                    return Ok((Self { path }, took_over));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let text = match std::fs::read_to_string(&path) {
                        Ok(t) => t,
                        // removed in between by its owner: try again
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(io(e)),
                    };
                    let holder = Holder::parse(&text);
                    if took_over.is_some() || !holder.is_dead_here() {
                        return Err(LockError::Held {
                            dir: work_dir.to_path_buf(),
                            path: path.clone(),
                            holder: holder.describe(),
                        });
                    }
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(io(e)),
                    }
                    took_over = Some(format!(
                        "took over the stale lock {} of a run that no longer exists ({})",
                        path.display(),
                        holder.describe()
                    ));
                }
                Err(e) => return Err(io(e)),
            }
        }
        let holder = std::fs::read_to_string(&path)
            .map(|t| Holder::parse(&t).describe())
            .unwrap_or_else(|_| "unknown".into());
        Err(LockError::Held {
            dir: work_dir.to_path_buf(),
            path,
            holder,
        })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDirLock {
    fn drop(&mut self) {
        // remove the file only while it is still ours
        let ours = std::fs::read_to_string(&self.path)
            .map(|t| Holder::parse(&t) == Holder::me())
            .unwrap_or(false);
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// What a training run does first in its work dir: take the lock (reporting a takeover through `message`),
/// then remove what interrupted saves of earlier runs left behind (safe now that no one else writes there).
pub fn lock_for_training(
    work_dir: &Path,
    message: &mut dyn FnMut(&str),
) -> Result<WorkDirLock, super::trainer::TrainError> {
    let (lock, took_over) = WorkDirLock::acquire(work_dir)?;
    if let Some(m) = took_over {
        message(&m);
    }
    let removed = super::checkpoint::remove_stale_temps(work_dir)?;
    if !removed.is_empty() {
        let names: Vec<String> = removed.iter().map(|p| p.display().to_string()).collect();
        message(&format!(
            "removed {} leftover(s) of interrupted saves: {}",
            removed.len(),
            names.join(", ")
        ));
    }
    Ok(lock)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("attndet-lock-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_released_on_drop() {
        let d = dir("twice");
        let (lock, msg) = WorkDirLock::acquire(&d).unwrap();
        assert!(msg.is_none());
        let text = std::fs::read_to_string(lock.path()).unwrap();
        assert!(text.contains(&format!("pid={}", std::process::id())), "{text}");
        let err = WorkDirLock::acquire(&d).unwrap_err();
        assert!(err.is_held());
        let msg = err.to_string();
        assert!(msg.contains(&format!("pid {}", std::process::id())), "{msg}");
        drop(lock);
        assert!(!d.join(LOCK_FILE).exists());
        let (again, _) = WorkDirLock::acquire(&d).unwrap();
        drop(again);
        let _ = std::fs::remove_dir_all(d);
    }

    #[test]
    fn a_stale_lock_of_a_dead_process_is_taken_over_and_a_foreign_one_is_not() {
        let d = dir("stale");
        // a pid above the kernel's maximum (4194304) cannot be alive
        std::fs::write(d.join(LOCK_FILE), format!("pid=99999999\nhost={}\n", hostname())).unwrap();
        let (lock, msg) = WorkDirLock::acquire(&d).unwrap();
        let msg = msg.expect("a takeover message");
        assert!(msg.contains("stale") && msg.contains("99999999"), "{msg}");
        drop(lock);
        // another host's lock, or one that names no pid, is never taken over
        for text in ["pid=99999999\nhost=some-other-host\n", "garbage"] {
            std::fs::write(d.join(LOCK_FILE), text).unwrap();
            assert!(WorkDirLock::acquire(&d).unwrap_err().is_held(), "{text}");
        }
        let _ = std::fs::remove_dir_all(d);
    }
}
