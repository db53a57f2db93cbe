//! Process, user and filesystem helpers: locating the PostgreSQL binaries,
//! choosing the unprivileged account to run them as, and checking whether a
//! postmaster process is still alive.

use std::ffi::{CString, OsStr};
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

/// Name of the system account created when running as root and no
/// `postgres` account exists.
pub(crate) const FALLBACK_USER: &str = "sluice-pg";

/// Binds `127.0.0.1:0`, reads the port the kernel chose and releases it.
///
/// The port is free at the time of the call only; [`crate::PgCluster::start`]
/// retries with a new port if the server then fails to bind it.
pub fn free_loopback_port() -> io::Result<u16> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok(listener.local_addr()?.port())
}

/// True when `pid` names a live process (not a zombie).
///
/// Uses `/proc` on Linux and falls back to `kill(pid, 0)` elsewhere.
pub fn pid_alive(pid: u32) -> bool {
    if pid == 0 || pid > i32::MAX as u32 {
        return false;
    }
    let proc_root = Path::new("/proc");
    if proc_root.join("self").exists() {
        return match std::fs::read_to_string(proc_root.join(pid.to_string()).join("stat")) {
            Ok(stat) => {
                // Format: "pid (comm) S ...": the state follows the last ')'.
                let state = stat
                    .rsplit_once(')')
                    .and_then(|(_, rest)| rest.trim_start().chars().next());
                !matches!(state, Some('Z') | Some('X') | None)
            }
            Err(_) => false,
        };
    }
    // SAFETY: kill with signal 0 only performs the existence/permission check.
    let rc = unsafe { libc::kill(pid as libc::pid_t, 0) };
    rc == 0 || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// True when `pid` is alive and (where `/proc` allows checking) runs a
/// `postgres` executable. Guards against signalling an unrelated process
/// that reused a stale postmaster PID.
pub(crate) fn postgres_pid_alive(pid: u32) -> bool {
    if !pid_alive(pid) {
        return false;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) => {
            let comm = comm.trim();
            comm == "postgres" || comm == "postmaster"
        }
        Err(_) => true,
    }
}

/// Sends `signal` to `pid`; errors are ignored (the process may be gone).
pub(crate) fn signal(pid: u32, signal: libc::c_int) {
    if pid == 0 || pid > i32::MAX as u32 {
        return;
    }
    // SAFETY: plain kill(2) on a positive pid.
    unsafe {
        libc::kill(pid as libc::pid_t, signal);
    }
}

/// Waits up to `timeout` for `pid` to exit. Returns true if it is gone.
pub(crate) fn wait_pid_gone(pid: u32, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if !pid_alive(pid) {
            return true;
        }
        if std::time::Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reads the postmaster PID from `<data>/postmaster.pid` and returns it if
/// that process is a live postgres.
pub(crate) fn postmaster_pid(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: u32 = text.lines().next()?.trim().parse().ok()?;
    postgres_pid_alive(pid).then_some(pid)
}

/// Locates the PostgreSQL binary directory: `SLUICE_PG_BINDIR`, then
/// `pg_config --bindir`, then the highest `/usr/lib/postgresql/*/bin`.
pub fn find_bindir() -> Result<PathBuf> {
    static CACHE: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| discover_bindir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(|e| anyhow!(e))
}

fn has_server_binaries(dir: &Path) -> bool {
    ["initdb", "pg_ctl", "postgres", "psql"]
        .iter()
        .all(|b| dir.join(b).is_file())
}

fn discover_bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("SLUICE_PG_BINDIR") {
        let dir = PathBuf::from(dir);
        if has_server_binaries(&dir) {
            return Ok(dir);
        }
        bail!(
            "SLUICE_PG_BINDIR={} does not contain initdb, pg_ctl, postgres and psql",
            dir.display()
        );
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        if out.status.success() {
            let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if has_server_binaries(&dir) {
                return Ok(dir);
            }
        }
    }
    let mut best: Option<(u32, PathBuf)> = None;
    if let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") {
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(major) = name
                .to_str()
                .and_then(|s| s.split('.').next())
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            let bin = entry.path().join("bin");
            if has_server_binaries(&bin) && best.as_ref().is_none_or(|(m, _)| major > *m) {
                best = Some((major, bin));
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server binaries not found: set SLUICE_PG_BINDIR, put pg_config on PATH, \
             or install them under /usr/lib/postgresql/<major>/bin"
        )
    })
}

/// The unprivileged account PostgreSQL commands run as when we are root.
#[derive(Clone, Debug)]
pub(crate) struct RunAs {
    pub(crate) user: String,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
}

/// `None` when not running as root (commands run as the current user);
/// otherwise the account to switch to: `SLUICE_PG_USER` if set, else
/// `postgres` if it exists, else `sluice-pg` (created on first use).
pub(crate) fn run_as() -> Result<Option<RunAs>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(None);
    }
    static CACHE: OnceLock<std::result::Result<RunAs, String>> = OnceLock::new();
    CACHE
        .get_or_init(|| resolve_run_as().map_err(|e| format!("{e:#}")))
        .clone()
        .map(Some)
        .map_err(|e| anyhow!(e))
}

fn resolve_run_as() -> Result<RunAs> {
    if let Ok(user) = std::env::var("SLUICE_PG_USER") {
        let (uid, gid) =
            lookup_user(&user).with_context(|| format!("SLUICE_PG_USER={user}: no such user"))?;
        if uid == 0 {
            bail!("SLUICE_PG_USER={user} is root; PostgreSQL refuses to run as root");
        }
        return Ok(RunAs { user, uid, gid });
    }
    if let Some((uid, gid)) = lookup_user("postgres").filter(|(uid, _)| *uid != 0) {
        return Ok(RunAs {
            user: "postgres".into(),
            uid,
            gid,
        });
    }
    if let Some((uid, gid)) = lookup_user(FALLBACK_USER) {
        return Ok(RunAs {
            user: FALLBACK_USER.into(),
            uid,
            gid,
        });
    }
    // Several test processes may race to create the account; useradd may
    // fail with "already exists" or a lock error, so re-check and retry.
    let mut last_err = String::new();
    for _ in 0..10 {
        match Command::new("useradd")
            .args(["--system", "--no-create-home", FALLBACK_USER])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => last_err = String::from_utf8_lossy(&out.stderr).trim().to_string(),
            Err(e) => last_err = format!("cannot run useradd: {e}"),
        }
        if let Some((uid, gid)) = lookup_user(FALLBACK_USER) {
            tracing::info!(
                user = FALLBACK_USER,
                uid,
                "created system user for PostgreSQL"
            );
            return Ok(RunAs {
                user: FALLBACK_USER.into(),
                uid,
                gid,
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "running as root and no `postgres` user exists; creating system user `{FALLBACK_USER}` \
         failed: {last_err}"
    )
}

/// Looks up a user's uid and primary gid via NSS.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let cname = CString::new(name).ok()?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: passwd is a plain C struct; zeroed is a valid "empty" value.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the duration of the call and the
    // buffer length matches the buffer.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return None;
    }
    Some((pwd.pw_uid, pwd.pw_gid))
}

/// Whether every ancestor of `path` (inclusive) is traversable by "others".
pub(crate) fn world_traversable(path: &Path) -> bool {
    path.ancestors().all(|p| {
        p.as_os_str().is_empty()
            || std::fs::metadata(p)
                .map(|m| m.permissions().mode() & 0o001 != 0)
                .unwrap_or(false)
    })
}

/// Whether a process running as `uid`/`gid` can traverse every directory
/// from `/` down to `path` (approximation based on mode bits; ACLs ignored).
pub(crate) fn reachable_by(path: &Path, uid: u32, gid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    path.ancestors().all(|p| {
        if p.as_os_str().is_empty() {
            return true;
        }
        match std::fs::metadata(p) {
            Ok(m) => {
                let mode = m.mode();
                if m.uid() == uid {
                    mode & 0o100 != 0
                } else if m.gid() == gid {
                    mode & 0o010 != 0
                } else {
                    mode & 0o001 != 0
                }
            }
            Err(_) => false,
        }
    })
}

/// Removes all `PG*` variables from a command's environment so the
/// caller's libpq settings never redirect our commands elsewhere.
pub(crate) fn scrub_pg_env(cmd: &mut Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_str().is_some_and(|k| k.starts_with("PG")) {
            cmd.env_remove(&key);
        }
    }
}

/// Runs a command to completion, turning a non-zero exit into an error
/// that carries the command line and its stderr/stdout.
pub(crate) fn run_checked(cmd: &mut Command) -> Result<Output> {
    let desc = describe(cmd);
    let out = cmd
        .output()
        .with_context(|| format!("failed to run {desc}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let mut msg = format!("{desc} failed ({})", out.status);
        if !stderr.trim().is_empty() {
            msg.push_str(&format!("\nstderr:\n{}", stderr.trim_end()));
        }
        if !stdout.trim().is_empty() {
            msg.push_str(&format!("\nstdout:\n{}", stdout.trim_end()));
        }
        bail!(msg);
    }
    Ok(out)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for arg in cmd.get_args() {
        s.push(' ');
        s.push_str(&shell_word(arg));
    }
    s
}

fn shell_word(arg: &OsStr) -> String {
    let s = arg.to_string_lossy();
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c))
    {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Last `lines` lines of a (log) file, or a note that it is unreadable.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let text = String::from_utf8_lossy(&bytes);
            let all: Vec<&str> = text.lines().collect();
            all[all.len().saturating_sub(lines)..].join("\n")
        }
        Err(e) => format!("(cannot read {}: {e})", path.display()),
    }
}

/// Random alphanumeric string from the OS RNG.
pub(crate) fn random_token(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len * 2];
    let filled = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .is_ok();
    if !filled {
        // Fall back to hashing time and pid; only used for throwaway clusters.
        use std::hash::{BuildHasher, Hasher};
        for chunk in bytes.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.write_u32(std::process::id());
            let v = h.finish().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
    bytes
        .iter()
        .filter(|b| (**b as usize) < 248) // 248 = 4 * 62: unbiased
        .take(len)
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect::<String>()
        .chars()
        .chain(std::iter::repeat('x'))
        .take(len)
        .collect()
}

/// Percent-encodes a URL userinfo/path component.
pub(crate) fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_is_alphanumeric() {
        let t = random_token(24);
        assert_eq!(t.len(), 24);
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(t, random_token(24));
    }

    #[test]
    fn percent_encoding() {
        assert_eq!(percent_encode("a b@c:d/é"), "a%20b%40c%3Ad%2F%C3%A9");
        assert_eq!(percent_encode("Abc-1._~"), "Abc-1._~");
    }

    #[test]
    fn own_pid_alive() {
        assert!(pid_alive(std::process::id()));
        assert!(!pid_alive(0));
    }
}
