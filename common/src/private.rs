//! Files and directories that hold job output, parameters and run history are private to
//! the account that runs agentfleet: directories 0700, files 0600 on Unix. Job output can
//! hold anything a job prints (connection strings, customer data), and a local user who
//! can write into a sidecar's state directory could plant an execution record or a stop
//! file. On Windows the directories inherit the ACL of their parent (ProgramData is
//! readable by local users): setting an explicit DACL there is not done yet.
use std::path::Path;

/// Creates `dir` (and its parents) if needed; on Unix, makes `dir` itself 0700 when this
/// process created it or `force` is set (a service's own state directory).
pub fn create_dir(dir: &Path, force: bool) -> std::io::Result<()> {
    let existed = dir.is_dir();
    std::fs::create_dir_all(dir)?;
    if !existed || force {
        restrict(dir, 0o700)?;
    }
    Ok(())
}

/// Makes `file` 0600 on Unix, creating it empty if it does not exist (so that a program
/// that opens it later, such as SQLite, never creates it with the default umask).
///
/// An existing file is never opened here, only chmod-ed by path: closing any descriptor
/// of a SQLite database drops every POSIX lock this process holds on it, which would let
/// another process corrupt it under this process's open connections.
pub fn create_file(file: &Path) -> std::io::Result<()> {
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(file)
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e),
    }
    restrict(file, 0o600)
}

#[cfg(unix)]
fn restrict(path: &Path, mode: u32) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if current == mode {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
}

#[cfg(not(unix))]
fn restrict(_path: &Path, _mode: u32) -> std::io::Result<()> {
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn new_directories_and_files_are_private() {
        let dir = tempfile::tempdir().unwrap();
        let home = dir.path().join("home");
        create_dir(&home, false).unwrap();
        assert_eq!(mode(&home), 0o700);
        let db = home.join("store.db");
        create_file(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        // An existing file keeps its content and is made private.
        std::fs::write(&db, "data").unwrap();
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        create_file(&db).unwrap();
        assert_eq!(
            (mode(&db), std::fs::read_to_string(&db).unwrap().as_str()),
            (0o600, "data")
        );
        // An existing directory is left alone unless forced (a service's own state dir).
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&shared, false).unwrap();
        assert_eq!(mode(&shared), 0o755);
        create_dir(&shared, true).unwrap();
        assert_eq!(mode(&shared), 0o700);
    }
}
