//! The files destination: certificate, chain and key written the way
//! certbot lays them out, for TLS servers that read PEM files (nginx,
//! HAProxy, Postfix, …), then an optional post-deploy command (a reload).
//!
//! Layout under the target directory `DIR`:
//!
//! ```text
//! DIR/archive/NAME/<version>-<seq>/{cert,chain,fullchain,privkey,bundle}.pem
//! DIR/live/NAME -> ../archive/NAME/<version>-<seq>
//! ```
//!
//! Invariants:
//!
//! * A version directory is complete (every file written and fsynced) before
//!   `live/NAME` points at it, and it is never written again.
//! * `live/NAME` is switched by `rename()`-ing a new symlink over it, so it
//!   always exists and always names one complete version. A reader that
//!   resolves `live/NAME` once (or reads `bundle.pem` alone) sees one
//!   version; a reader that opens `live/NAME/cert.pem` and then
//!   `live/NAME/privkey.pem` may straddle a switch — servers that reload
//!   between the two reads are the reason `bundle.pem` exists.
//! * The symlink is relative, so `DIR` can be moved or mounted elsewhere.
//! * `NAME` is a validated DNS name ([`DnsName`]); `*.` becomes
//!   [`WILDCARD_PREFIX`]. Nothing a name contains can leave `DIR`.
//! * Old versions are removed beyond [`FilesTarget::keep_versions`], never
//!   the one just linked nor the one just replaced (a reader may still be
//!   reading it). A reader that holds a resolved directory across more than
//!   `keep_versions - 1` further deploys may find it gone.
//! * One writer per `DIR`/`NAME` at a time: the caller serializes deploys of
//!   a name (two concurrent writers leave `live/NAME` at whichever renamed
//!   last).
//!
//! This module does not decide *when* to deploy and does not read the store.

use std::fmt;
use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::command::run_command;
pub use crate::command::{CommandOutcome, CommandStatus, STDERR_TAIL_BYTES};
use crate::config::FilesTarget;
use crate::domain::DnsName;

/// What a wildcard's leading `*` becomes in a directory name. `_` is not
/// allowed in a [`DnsName`], so no real name maps to the same directory.
pub const WILDCARD_PREFIX: &str = "_wildcard_";

/// Longest sanitized version label in a directory name.
const VERSION_MAX: usize = 64;
/// Digits of the sequence number that orders version directories.
const SEQ_WIDTH: usize = 8;
/// Files a TLS server reads without root's help.
const PUBLIC_FILE: u32 = 0o644;
/// Files holding the private key.
const SECRET_FILE: u32 = 0o600;
/// Directories on the way to a private key.
const PRIVATE_DIR: u32 = 0o700;
/// `live/`: only symlinks, the targets are protected.
const PUBLIC_DIR: u32 = 0o755;

/// One certificate to deploy, with its key. `Debug` never shows the key.
#[derive(Clone)]
pub struct Material {
    /// The DNS name the files are deployed under (`live/NAME`).
    pub name: String,
    /// The leaf certificate, PEM.
    pub leaf_pem: String,
    /// The intermediates only, PEM, in the order the CA returned them.
    pub chain_pem: String,
    /// The private key, PEM. Secret.
    pub key_pem: String,
    /// Identifies the certificate in the directory name (e.g.
    /// `primary-0a1b…`); sanitized, so any string is accepted.
    pub version: String,
}

impl fmt::Debug for Material {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Material")
            .field("name", &self.name)
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

/// What a deploy did.
#[derive(Debug, Clone)]
pub struct FilesOutcome {
    /// `DIR/live/NAME`, the path servers are configured with.
    pub live_path: PathBuf,
    /// The version directory `live/NAME` now points at.
    pub version_dir: PathBuf,
    /// The post-deploy command's result, when one is configured. A failed
    /// command does not undo the deploy: the files are in place.
    pub command: Option<CommandOutcome>,
}

/// Why the files could not be deployed. The previous `live/NAME`, if any,
/// is untouched unless the error says the switch itself failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FilesError {
    /// The name cannot be a directory under `DIR`; final.
    #[error("cannot deploy '{name}': {reason}")]
    InvalidName {
        /// The name as given (escaped, shortened).
        name: String,
        /// The rule it broke.
        reason: String,
    },
    /// A filesystem operation failed (permissions, full disk, a `live/NAME`
    /// that is a real directory); retrying may help once fixed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What was being done.
        action: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The blocking task that writes the files did not finish (it panicked
    /// or the runtime is shutting down).
    #[error("file deployment task failed: {0}")]
    Task(String),
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> FilesError {
    let path = path.to_path_buf();
    move |source| FilesError::Io {
        action,
        path,
        source,
    }
}

/// The directory name for `name` under `archive/` and `live/`: the
/// normalised DNS name, with a leading `*` spelled [`WILDCARD_PREFIX`].
pub fn dir_name(name: &str) -> Result<String, FilesError> {
    let invalid = |reason: String| FilesError::InvalidName {
        name: name
            .chars()
            .take(80)
            .collect::<String>()
            .escape_debug()
            .to_string(),
        reason,
    };
    let parsed = DnsName::parse(name).map_err(|e| invalid(e.0))?;
    let dir = match parsed.as_str().strip_prefix('*') {
        Some(rest) => format!("{WILDCARD_PREFIX}{rest}"),
        None => parsed.as_str().to_string(),
    };
    // DnsName already excludes these; checked again because a mistake here
    // writes outside DIR.
    if dir.contains('/') || dir.contains('\0') || dir == "." || dir == ".." {
        return Err(invalid("not a safe directory name".into()));
    }
    if dir.len() > 255 {
        return Err(invalid(format!(
            "'{dir}' is longer than a file name may be (255 bytes)"
        )));
    }
    Ok(dir)
}

/// `version` reduced to `[A-Za-z0-9._-]`, at most [`VERSION_MAX`]
/// characters, never empty and never starting with a dot.
fn version_label(version: &str) -> String {
    let mut label: String = version
        .chars()
        .take(VERSION_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    if label.starts_with('.') {
        label.replace_range(0..1, "_");
    }
    if label.is_empty() {
        label.push('v');
    }
    label
}

/// The sequence number of a version directory this module made, `None` for
/// anything else (which is then never touched).
fn seq_of(dir: &str) -> Option<u64> {
    let (_, seq) = dir.rsplit_once('-')?;
    if seq.len() < SEQ_WIDTH || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq.parse().ok()
}

/// Deploys `m` to `target` (see the module doc), then runs the post-deploy
/// command if one is configured.
pub async fn write(target: &FilesTarget, m: &Material) -> Result<FilesOutcome, FilesError> {
    let name_dir = dir_name(&m.name)?;
    let (target_copy, material) = (target.clone(), m.clone());
    let (live_path, version_dir) =
        tokio::task::spawn_blocking(move || deploy(&target_copy, &material, &name_dir))
            .await
            .map_err(|e| FilesError::Task(e.to_string()))??;
    let command = match &target.post_deploy_command {
        Some(argv) => Some(
            run_command(
                argv,
                target.post_deploy_timeout,
                &[
                    ("TWINCERT_NAME", std::ffi::OsStr::new(&m.name)),
                    ("TWINCERT_LIVE_DIR", live_path.as_os_str()),
                ],
            )
            .await,
        ),
        None => None,
    };
    Ok(FilesOutcome {
        live_path,
        version_dir,
        command,
    })
}

/// Deploys many certificates to one `target` with one durability barrier
/// instead of eight `fsync`s per name: every version directory is written
/// first (not synced), then one `syncfs` makes all of them durable, then
/// every `live/NAME` is switched and `live` is synced once. The
/// invariants of the module doc hold for each name: a link is switched
/// only to a version that is complete *and durable*, so no reader — nor a
/// crash — ever sees a key without its certificate. Each name's
/// post-deploy command runs after all switches. One result per material,
/// in order; a name that fails (a bad name, a full disk) does not keep
/// the others from being deployed, except a failed barrier, which fails
/// every name of the batch before any link is switched.
pub async fn write_batch(
    target: &FilesTarget,
    materials: &[Material],
) -> Vec<Result<FilesOutcome, FilesError>> {
    write_batch_timed(target, materials, 1).await.0
}

/// Where a batch's time went: writing the version directories, the one
/// durability barrier, switching the links (with `live` synced), and
/// the post-deploy commands. For the deployer's stage figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchTimings {
    /// Every version directory written (not synced).
    pub write: std::time::Duration,
    /// The one `syncfs` barrier.
    pub sync: std::time::Duration,
    /// The link switches, `live` synced once, old versions collected.
    pub switch: std::time::Duration,
    /// The post-deploy commands, one after another.
    pub commands: std::time::Duration,
}

/// [`write_batch`] with `writers` names written (and switched) at once
/// on threads of their own, also saying where the time went. The
/// barrier is still one, after every version directory is complete.
pub async fn write_batch_timed(
    target: &FilesTarget,
    materials: &[Material],
    writers: usize,
) -> (Vec<Result<FilesOutcome, FilesError>>, BatchTimings) {
    let (target_copy, batch) = (target.clone(), materials.to_vec());
    let (switched, mut timings) = match tokio::task::spawn_blocking(move || {
        deploy_batch(&target_copy, &batch, writers)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            let failed = materials
                .iter()
                .map(|_| Err(FilesError::Task(e.to_string())))
                .collect();
            return (failed, BatchTimings::default());
        }
    };
    let commands = std::time::Instant::now();
    let mut out = Vec::with_capacity(materials.len());
    for (m, r) in materials.iter().zip(switched) {
        out.push(match r {
            Ok((live_path, version_dir)) => {
                let command = match &target.post_deploy_command {
                    Some(argv) => Some(
                        run_command(
                            argv,
                            target.post_deploy_timeout,
                            &[
                                ("TWINCERT_NAME", std::ffi::OsStr::new(&m.name)),
                                ("TWINCERT_LIVE_DIR", live_path.as_os_str()),
                            ],
                        )
                        .await,
                    ),
                    None => None,
                };
                Ok(FilesOutcome {
                    live_path,
                    version_dir,
                    command,
                })
            }
            Err(e) => Err(e),
        });
    }
    timings.commands = commands.elapsed();
    (out, timings)
}

/// One name of a batch: `live/NAME` and the version directory it now
/// names, or why not.
type Switched = Result<(PathBuf, PathBuf), FilesError>;

/// `f` over `items` on up to `threads` threads (contiguous shares), the
/// results in the order of `items`. Filesystem calls on a busy machine
/// wait more than they compute: several at once hide the waits.
fn par_map<T: Send, R: Send>(items: Vec<T>, threads: usize, f: impl Fn(T) -> R + Sync) -> Vec<R> {
    let threads = threads.clamp(1, items.len().max(1));
    if threads == 1 {
        return items.into_iter().map(f).collect();
    }
    let per = items.len().div_ceil(threads);
    let (mut shares, mut rest) = (Vec::with_capacity(threads), items);
    while rest.len() > per {
        let tail = rest.split_off(per);
        shares.push(rest);
        rest = tail;
    }
    shares.push(rest);
    let f = &f;
    std::thread::scope(|s| {
        let running: Vec<_> = shares
            .into_iter()
            .map(|share| s.spawn(move || share.into_iter().map(f).collect::<Vec<R>>()))
            .collect();
        running
            .into_iter()
            .flat_map(|t| t.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    })
}

/// The blocking part of [`write_batch`].
fn deploy_batch(
    target: &FilesTarget,
    materials: &[Material],
    writers: usize,
) -> (Vec<Switched>, BatchTimings) {
    let mut timings = BatchTimings::default();
    let started = std::time::Instant::now();
    // 1. Every version directory, written but not synced; `writers`
    // names at once (each its own directory: no two touch one path).
    let written: Vec<Result<Written, FilesError>> =
        par_map(materials.iter().collect(), writers, |m| {
            let name_dir = dir_name(&m.name)?;
            write_version(target, m, &name_dir, Durability::Deferred)
        });
    timings.write = started.elapsed();
    // 2. One barrier for all of them (files, directories, entries).
    let started = std::time::Instant::now();
    let barrier = if written.iter().any(Result::is_ok) {
        sync_filesystem(&target.dir)
    } else {
        Ok(())
    };
    timings.sync = started.elapsed();
    if let Err(e) = barrier {
        let msg = e.to_string();
        let failed = written
            .into_iter()
            .map(|w| {
                w.and_then(|_| {
                    Err(FilesError::Io {
                        action: "syncing",
                        path: target.dir.clone(),
                        source: io::Error::other(msg.clone()),
                    })
                })
            })
            .collect();
        return (failed, timings);
    }
    // 3. The switches, then `live` synced once.
    let started = std::time::Instant::now();
    let live = target.dir.join("live");
    let switched: Vec<Result<Written, FilesError>> = par_map(written, writers, |w| {
        let mut v = w?;
        v.replaced = link_version(&live, &v, false)?;
        Ok(v)
    });
    if switched.iter().any(Result::is_ok)
        && let Err(e) = sync_dir(&live)
    {
        tracing::warn!(error = %e, "syncing live/ after a batch of switches");
    }
    // 4. Old versions.
    let done = par_map(switched, writers, |w| {
        let v = w?;
        collect_garbage(
            &v.name_archive,
            target.keep_versions,
            &v.dir,
            v.replaced.as_deref(),
        );
        Ok((v.link, v.version_dir))
    });
    timings.switch = started.elapsed();
    (done, timings)
}

/// One name's new version directory, complete, not yet linked.
struct Written {
    name_dir: String,
    name_archive: PathBuf,
    dir: String,
    version_dir: PathBuf,
    link: PathBuf,
    replaced: Option<String>,
}

/// Whether a version is made durable as it is written (one name) or by a
/// barrier after a whole batch ([`sync_filesystem`]).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Now,
    Deferred,
}

/// Writes `m`'s version directory under `target` (every file complete;
/// synced unless `Deferred`).
fn write_version(
    target: &FilesTarget,
    m: &Material,
    name_dir: &str,
    durability: Durability,
) -> Result<Written, FilesError> {
    let archive = target.dir.join("archive");
    let name_archive = archive.join(name_dir);
    let live = target.dir.join("live");
    fs::create_dir_all(&target.dir).map_err(io_err("creating", &target.dir))?;
    make_dir(&archive, PRIVATE_DIR)?;
    make_dir(&name_archive, PRIVATE_DIR)?;
    make_dir(&live, PUBLIC_DIR)?;

    let (dir, version_dir) = new_version_dir(&name_archive, &version_label(&m.version))?;
    let fullchain = [m.leaf_pem.as_str(), m.chain_pem.as_str()];
    let files: [(&str, u32, &[&str]); 5] = [
        ("cert.pem", PUBLIC_FILE, &[&m.leaf_pem]),
        ("chain.pem", PUBLIC_FILE, &[&m.chain_pem]),
        ("fullchain.pem", PUBLIC_FILE, &fullchain),
        ("privkey.pem", SECRET_FILE, &[&m.key_pem]),
        (
            "bundle.pem",
            SECRET_FILE,
            &[&m.key_pem, &m.leaf_pem, &m.chain_pem],
        ),
    ];
    for (file, mode, parts) in files {
        write_file(
            &version_dir.join(file),
            mode,
            parts,
            durability == Durability::Now,
        )?;
    }
    if durability == Durability::Now {
        sync_dir(&version_dir)?;
        sync_dir(&name_archive)?;
    }
    Ok(Written {
        name_dir: name_dir.to_string(),
        link: live.join(name_dir),
        name_archive,
        dir,
        version_dir,
        replaced: None,
    })
}

/// Switches `live/NAME` to the written version (`sync`: and syncs
/// `live`); returns the version it replaced.
fn link_version(live: &Path, v: &Written, sync: bool) -> Result<Option<String>, FilesError> {
    let replaced = previous_version(&v.link, &v.name_dir);
    switch_link(
        live,
        &v.link,
        &Path::new("..")
            .join("archive")
            .join(&v.name_dir)
            .join(&v.dir),
        sync,
    )?;
    Ok(replaced)
}

/// The blocking part of [`write`]: archive, switch, collect garbage.
/// Returns `live/NAME` and the new version directory.
fn deploy(
    target: &FilesTarget,
    m: &Material,
    name_dir: &str,
) -> Result<(PathBuf, PathBuf), FilesError> {
    let v = write_version(target, m, name_dir, Durability::Now)?;
    let replaced = link_version(&target.dir.join("live"), &v, true)?;
    collect_garbage(
        &v.name_archive,
        target.keep_versions,
        &v.dir,
        replaced.as_deref(),
    );
    Ok((v.link, v.version_dir))
}

/// Makes everything written under `dir`'s filesystem durable with one
/// call (`syncfs(2)`): the barrier of a batch. Elsewhere than Linux, a
/// `sync(2)` of everything.
fn sync_filesystem(dir: &Path) -> Result<(), FilesError> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let d = fs::File::open(dir).map_err(io_err("opening", dir))?;
        // SAFETY: `d` is an open descriptor for the whole call.
        if unsafe { libc::syncfs(d.as_raw_fd()) } != 0 {
            return Err(io_err("syncing the filesystem of", dir)(
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        // SAFETY: sync(2) takes no arguments and cannot fail.
        unsafe { libc::sync() };
        Ok(())
    }
}

/// Creates `path` with `mode` if it does not exist; an existing directory
/// keeps the mode the operator gave it.
fn make_dir(path: &Path, mode: u32) -> Result<(), FilesError> {
    match DirBuilder::new().mode(mode).create(path) {
        Ok(()) => fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .map_err(io_err("setting the mode of", path)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(io_err("creating", path)(e)),
    }
}

/// Makes the next `<label>-<seq>` directory (mode 0700) under
/// `name_archive`. The sequence continues from the highest one present, so
/// directory names sort by age.
fn new_version_dir(name_archive: &Path, label: &str) -> Result<(String, PathBuf), FilesError> {
    let mut seq = versions(name_archive)?
        .iter()
        .map(|(s, _)| *s)
        .max()
        .map_or(1, |s| s.saturating_add(1));
    loop {
        let dir = format!("{label}-{seq:0SEQ_WIDTH$}");
        let path = name_archive.join(&dir);
        match DirBuilder::new().mode(PRIVATE_DIR).create(&path) {
            Ok(()) => {
                fs::set_permissions(&path, fs::Permissions::from_mode(PRIVATE_DIR))
                    .map_err(io_err("setting the mode of", &path))?;
                return Ok((dir, path));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => seq = seq.saturating_add(1),
            Err(e) => return Err(io_err("creating", &path)(e)),
        }
    }
}

/// The version directories under `name_archive`, as (sequence, name).
fn versions(name_archive: &Path) -> Result<Vec<(u64, String)>, FilesError> {
    let mut out = Vec::new();
    for entry in fs::read_dir(name_archive).map_err(io_err("listing", name_archive))? {
        let entry = entry.map_err(io_err("listing", name_archive))?;
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let (true, Some(name)) = (is_dir, entry.file_name().to_str())
            && let Some(seq) = seq_of(name)
        {
            out.push((seq, name.to_string()));
        }
    }
    Ok(out)
}

/// Writes the concatenation of `parts` (each ending in a newline) to a new
/// file with exactly `mode`, and fsyncs it if `sync`.
fn write_file(path: &Path, mode: u32, parts: &[&str], sync: bool) -> Result<(), FilesError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io_err("creating", path))?;
    // The umask can only have narrowed `mode`; make it exact.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(io_err("setting the mode of", path))?;
    for part in parts.iter().filter(|p| !p.is_empty()) {
        file.write_all(part.as_bytes())
            .map_err(io_err("writing", path))?;
        if !part.ends_with('\n') {
            file.write_all(b"\n").map_err(io_err("writing", path))?;
        }
    }
    if sync {
        file.sync_all().map_err(io_err("syncing", path))?;
    }
    Ok(())
}

/// fsyncs a directory, so the entries made in it survive a crash.
fn sync_dir(path: &Path) -> Result<(), FilesError> {
    fs::File::open(path)
        .and_then(|d| d.sync_all())
        .map_err(io_err("syncing", path))
}

/// The version directory `link` points at now, if it is one of ours.
fn previous_version(link: &Path, name_dir: &str) -> Option<String> {
    let target = fs::read_link(link).ok()?;
    let ours = Path::new("..").join("archive").join(name_dir);
    if target.parent() != Some(ours.as_path()) {
        return None;
    }
    target.file_name()?.to_str().map(str::to_string)
}

/// Points `link` at `target` atomically: a symlink made under a temporary
/// name in `live` is renamed over `link`, then `live` is fsynced if
/// `sync` (a batch syncs it once after all its switches).
fn switch_link(live: &Path, link: &Path, target: &Path, sync: bool) -> Result<(), FilesError> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let tmp = live.join(format!(
        ".tmp-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    // Left over by a crashed process that had the same pid.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("removing", &tmp)(e)),
    }
    std::os::unix::fs::symlink(target, &tmp).map_err(io_err("creating symlink", &tmp))?;
    if let Err(e) = fs::rename(&tmp, link) {
        let _ = fs::remove_file(&tmp);
        return Err(io_err("switching", link)(e));
    }
    if sync { sync_dir(live) } else { Ok(()) }
}

/// Removes version directories beyond the `keep` newest, sparing `current`
/// and `replaced`. Failures are logged, not returned: the deploy is done.
fn collect_garbage(name_archive: &Path, keep: usize, current: &str, replaced: Option<&str>) {
    let mut all = match versions(name_archive) {
        Ok(all) => all,
        Err(e) => {
            tracing::warn!(error = %e, "not removing old certificate versions");
            return;
        }
    };
    all.sort_by_key(|(seq, _)| std::cmp::Reverse(*seq));
    for (_, dir) in all.iter().skip(keep) {
        if dir == current || Some(dir.as_str()) == replaced {
            continue;
        }
        let path = name_archive.join(dir);
        if let Err(e) = fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "could not remove an old certificate version");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{CertificateParams, KeyPair, PublicKeyData};
    use std::sync::Arc;
    use std::sync::atomic::AtomicBool;
    use std::time::Duration;
    use x509_parser::pem::Pem;

    /// A real certificate and its key, so a reader can check they match.
    fn material(name: &str, version: &str) -> Material {
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec!["example.com".to_string()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let ca_key = KeyPair::generate().expect("key");
        let intermediate = CertificateParams::new(Vec::<String>::new())
            .expect("params")
            .self_signed(&ca_key)
            .expect("intermediate");
        Material {
            name: name.into(),
            leaf_pem: cert.pem(),
            chain_pem: intermediate.pem(),
            key_pem: key.serialize_pem(),
            version: version.into(),
        }
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).expect("metadata").permissions().mode() & 0o777
    }

    fn read(path: &Path) -> String {
        fs::read_to_string(path).expect("read")
    }

    fn archive_dirs(dir: &Path, name_dir: &str) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir.join("archive").join(name_dir))
            .expect("archive")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        out.sort();
        out
    }

    #[tokio::test]
    async fn a_batch_links_every_name_to_its_complete_version_and_skips_bad_names() {
        // One writer, and several at once (shares of the batch on threads).
        for writers in [1, 3, 16] {
            a_batch_with(writers).await;
        }
    }

    async fn a_batch_with(writers: usize) {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut target = FilesTarget::new(tmp.path().join("certs"));
        target.keep_versions = 2;
        let first: Vec<Material> = ["a.example.com", "*.b.example.com", "c.example.com"]
            .iter()
            .map(|n| material(n, "primary-01"))
            .collect();
        let mut batch = first.clone();
        batch.insert(1, material("../evil", "primary-01"));
        let out = write_batch_timed(&target, &batch, writers).await.0;
        assert_eq!(out.len(), 4);
        assert!(
            matches!(out[1], Err(FilesError::InvalidName { .. })),
            "{:?}",
            out[1]
        );
        let deployed: Vec<&FilesOutcome> = [&out[0], &out[2], &out[3]]
            .into_iter()
            .map(|r| r.as_ref().expect("deployed"))
            .collect();
        for (m, o) in first.iter().zip(&deployed) {
            let live = &o.live_path;
            assert_eq!(
                fs::canonicalize(live).expect("resolves"),
                fs::canonicalize(&o.version_dir).expect("dir")
            );
            assert_eq!(read(&live.join("cert.pem")), m.leaf_pem);
            assert_eq!(read(&live.join("privkey.pem")), m.key_pem);
            assert_eq!(
                read(&live.join("bundle.pem")),
                format!("{}{}{}", m.key_pem, m.leaf_pem, m.chain_pem)
            );
            assert_eq!(mode(&o.version_dir.join("privkey.pem")), 0o600);
        }
        assert!(!tmp.path().join("evil").exists());
        // A second and third batch replace the versions; old ones are
        // collected as by `write`.
        for round in ["backup-02", "primary-03"] {
            let next: Vec<Material> = first.iter().map(|m| material(&m.name, round)).collect();
            let out = write_batch_timed(&target, &next, writers).await.0;
            for (m, r) in next.iter().zip(out) {
                let o = r.expect("deployed");
                assert_eq!(read(&o.live_path.join("cert.pem")), m.leaf_pem);
                assert_eq!(read(&o.live_path.join("privkey.pem")), m.key_pem);
            }
        }
        assert_eq!(
            archive_dirs(&target.dir, "a.example.com"),
            vec!["backup-02-00000002", "primary-03-00000003"]
        );
        assert_eq!(
            archive_dirs(&target.dir, "_wildcard_.b.example.com").len(),
            2
        );
    }

    #[tokio::test]
    async fn layout_modes_and_relative_link() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FilesTarget::new(tmp.path().join("certs"));
        let m = material("Example.com", "primary-0a1b");
        let out = write(&target, &m).await.expect("deployed");

        let live = target.dir.join("live").join("example.com");
        assert_eq!(out.live_path, live);
        assert!(out.command.is_none());
        let dir = &out.version_dir;
        assert_eq!(
            dir.parent(),
            Some(target.dir.join("archive/example.com").as_path())
        );
        let dir_name = dir.file_name().and_then(|n| n.to_str()).expect("name");
        assert_eq!(dir_name, "primary-0a1b-00000001");

        let link = fs::read_link(&live).expect("symlink");
        assert_eq!(
            link,
            Path::new("../archive/example.com/primary-0a1b-00000001")
        );
        assert_eq!(
            fs::canonicalize(&live).expect("resolves"),
            fs::canonicalize(dir).expect("dir")
        );

        assert_eq!(read(&live.join("cert.pem")), m.leaf_pem);
        assert_eq!(read(&live.join("chain.pem")), m.chain_pem);
        assert_eq!(
            read(&live.join("fullchain.pem")),
            format!("{}{}", m.leaf_pem, m.chain_pem)
        );
        assert_eq!(read(&live.join("privkey.pem")), m.key_pem);
        assert_eq!(
            read(&live.join("bundle.pem")),
            format!("{}{}{}", m.key_pem, m.leaf_pem, m.chain_pem)
        );

        let modes = [
            ("cert.pem", 0o644),
            ("chain.pem", 0o644),
            ("fullchain.pem", 0o644),
            ("privkey.pem", 0o600),
            ("bundle.pem", 0o600),
        ];
        for (file, want) in modes {
            assert_eq!(mode(&dir.join(file)), want, "{file}");
        }
        assert_eq!(mode(dir), 0o700);
        assert_eq!(mode(&target.dir.join("archive")), 0o700);
        assert_eq!(mode(&target.dir.join("archive/example.com")), 0o700);
        assert_eq!(mode(&target.dir.join("live")), 0o755);
        // No temporary link is left behind.
        let live_entries: Vec<_> = fs::read_dir(target.dir.join("live"))
            .expect("live")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(live_entries, vec![std::ffi::OsString::from("example.com")]);
    }

    #[tokio::test]
    async fn missing_newlines_are_added_between_parts() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FilesTarget::new(tmp.path());
        let m = Material {
            name: "example.com".into(),
            leaf_pem: "LEAF".into(),
            chain_pem: String::new(),
            key_pem: "KEY".into(),
            version: "v".into(),
        };
        let out = write(&target, &m).await.expect("deployed");
        assert_eq!(read(&out.version_dir.join("fullchain.pem")), "LEAF\n");
        assert_eq!(read(&out.version_dir.join("bundle.pem")), "KEY\nLEAF\n");
        assert_eq!(read(&out.version_dir.join("chain.pem")), "");
    }

    #[tokio::test]
    async fn link_follows_the_newest_and_old_versions_are_collected() {
        // (keep_versions, deploys, directories left)
        let cases = [(3usize, 6usize, 3usize), (5, 3, 3), (1, 4, 2), (0, 3, 2)];
        for (keep, deploys, left) in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            let mut target = FilesTarget::new(tmp.path());
            target.keep_versions = keep;
            // Not ours: must survive every collection.
            fs::create_dir_all(tmp.path().join("archive/example.com/notes")).expect("mkdir");
            let m = material("example.com", "primary-01");
            let mut last = Vec::new();
            for _ in 0..deploys {
                let out = write(&target, &m).await.expect("deployed");
                assert_eq!(
                    fs::canonicalize(&out.live_path).expect("live"),
                    fs::canonicalize(&out.version_dir).expect("dir"),
                    "keep {keep}: live is the newest"
                );
                last.push(
                    out.version_dir
                        .file_name()
                        .and_then(|n| n.to_str())
                        .expect("name")
                        .to_string(),
                );
            }
            let mut want: Vec<String> = last[deploys - left..].to_vec();
            want.push("notes".into());
            want.sort();
            assert_eq!(archive_dirs(tmp.path(), "example.com"), want, "keep {keep}");
        }
    }

    #[test]
    fn names_map_to_safe_directories() {
        let ok = [
            ("example.com", "example.com"),
            ("Example.COM.", "example.com"),
            ("*.example.com", "_wildcard_.example.com"),
            ("xn--bcher-kva.example", "xn--bcher-kva.example"),
        ];
        for (name, want) in ok {
            assert_eq!(dir_name(name).expect(name), want);
        }
        let bad = [
            "",
            ".",
            "..",
            "../etc",
            "../../etc/passwd",
            "a/b.example.com",
            "/etc/passwd",
            "example..com",
            "exa\0mple.com",
            "*",
            "*.",
            "a.*.example.com",
            "_wildcard_.example.com",
            " example.com",
        ];
        for name in bad {
            assert!(
                matches!(dir_name(name), Err(FilesError::InvalidName { .. })),
                "{name:?} was accepted"
            );
        }
    }

    #[tokio::test]
    async fn a_bad_name_writes_nothing() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FilesTarget::new(tmp.path().join("certs"));
        let m = material("../escape.example.com", "v");
        let err = write(&target, &m).await.expect_err("rejected");
        assert!(err.to_string().contains("../escape.example.com"), "{err}");
        assert!(!target.dir.exists());
    }

    #[test]
    fn version_labels_are_sanitized() {
        let cases = [
            ("primary-0a1b", "primary-0a1b"),
            ("", "v"),
            ("../../x", "_._.._x"),
            ("a b/c\0d", "a_b_c_d"),
            (".hidden", "_hidden"),
        ];
        for (raw, want) in cases {
            assert_eq!(version_label(raw), want, "{raw:?}");
        }
        assert_eq!(version_label(&"x".repeat(500)).len(), VERSION_MAX);
        assert_eq!(seq_of("primary-0a1b-00000007"), Some(7));
        assert_eq!(seq_of("notes"), None);
        assert_eq!(seq_of("primary-0a1b"), None);
    }

    #[test]
    fn debug_does_not_show_the_key() {
        let m = material("example.com", "v");
        let shown = format!("{m:?}");
        assert!(!shown.contains("PRIVATE KEY"), "{shown}");
        assert!(!shown.contains(m.key_pem.lines().nth(1).unwrap_or("?")));
        assert!(shown.contains("example.com"));
    }

    #[tokio::test]
    async fn post_deploy_command_outcomes() {
        struct Case {
            name: &'static str,
            argv: Vec<&'static str>,
            timeout: Duration,
            check: fn(&CommandOutcome),
        }
        let cases = [
            Case {
                name: "success, environment set",
                argv: vec![
                    "sh",
                    "-c",
                    "echo reloaded >&2; test \"$TWINCERT_NAME\" = '*.example.com' \
                     && test -f \"$TWINCERT_LIVE_DIR/fullchain.pem\"",
                ],
                timeout: Duration::from_secs(10),
                check: |o| {
                    assert_eq!(o.status, CommandStatus::Exited(0), "{o:?}");
                    assert!(o.status.success());
                    assert_eq!(o.stderr_tail, "reloaded\n");
                },
            },
            Case {
                name: "non-zero exit",
                argv: vec!["sh", "-c", "echo 'nginx: [emerg] bad config' >&2; exit 3"],
                timeout: Duration::from_secs(10),
                check: |o| {
                    assert_eq!(o.status, CommandStatus::Exited(3));
                    assert!(!o.status.success());
                    assert!(o.stderr_tail.contains("[emerg] bad config"), "{o:?}");
                },
            },
            Case {
                name: "timeout",
                argv: vec!["sleep", "5"],
                timeout: Duration::from_millis(200),
                check: |o| {
                    assert_eq!(o.status, CommandStatus::TimedOut);
                    assert!(o.duration < Duration::from_secs(3), "{o:?}");
                },
            },
            Case {
                name: "signal",
                argv: vec!["sh", "-c", "kill -TERM $$"],
                timeout: Duration::from_secs(10),
                check: |o| assert_eq!(o.status, CommandStatus::Signaled),
            },
            Case {
                name: "missing binary",
                argv: vec!["/nonexistent/twincert-reload"],
                timeout: Duration::from_secs(10),
                check: |o| {
                    let CommandStatus::SpawnFailed(why) = &o.status else {
                        panic!("{o:?}");
                    };
                    assert!(why.contains("/nonexistent/twincert-reload"), "{why}");
                },
            },
            Case {
                name: "empty argv",
                argv: vec![],
                timeout: Duration::from_secs(10),
                check: |o| assert!(matches!(o.status, CommandStatus::SpawnFailed(_))),
            },
            Case {
                name: "long stderr keeps the end",
                argv: vec![
                    "sh",
                    "-c",
                    "i=0; while [ $i -lt 300 ]; do echo line-$i-padding-padding >&2; i=$((i+1)); done",
                ],
                timeout: Duration::from_secs(10),
                check: |o| {
                    assert_eq!(o.status, CommandStatus::Exited(0));
                    assert_eq!(o.stderr_tail.len(), STDERR_TAIL_BYTES);
                    assert!(o.stderr_tail.ends_with("line-299-padding-padding\n"));
                },
            },
        ];
        for case in cases {
            let tmp = tempfile::tempdir().expect("tempdir");
            let mut target = FilesTarget::new(tmp.path());
            target.post_deploy_command = Some(case.argv.iter().map(|s| s.to_string()).collect());
            target.post_deploy_timeout = case.timeout;
            let m = material("*.example.com", "v");
            let out = write(&target, &m)
                .await
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            // Whatever the command did, the files are deployed.
            assert!(out.live_path.join("privkey.pem").is_file(), "{}", case.name);
            let outcome = out
                .command
                .unwrap_or_else(|| panic!("{}: no outcome", case.name));
            (case.check)(&outcome);
        }
    }

    /// The SubjectPublicKeyInfo of the first certificate and of the private
    /// key in `pem`.
    fn spkis(pem: &str) -> Result<(Vec<u8>, Vec<u8>), String> {
        let (mut cert, mut key) = (None, None);
        for block in Pem::iter_from_buffer(pem.as_bytes()) {
            let block = block.map_err(|e| format!("bad PEM: {e}"))?;
            match block.label.as_str() {
                "CERTIFICATE" if cert.is_none() => {
                    let (_, c) = x509_parser::parse_x509_certificate(&block.contents)
                        .map_err(|e| format!("bad cert: {e}"))?;
                    cert = Some(c.public_key().raw.to_vec());
                }
                "PRIVATE KEY" => {
                    let k = KeyPair::try_from(block.contents.as_slice())
                        .map_err(|e| format!("bad key: {e}"))?;
                    key = Some(k.subject_public_key_info());
                }
                _ => {}
            }
        }
        match (cert, key) {
            (Some(c), Some(k)) => Ok((c, k)),
            _ => Err("a certificate or the key is missing".into()),
        }
    }

    /// One read as a server does it: resolve `live/NAME` once, read both
    /// files from there; and `bundle.pem` alone. Returns the certificate's
    /// SPKI, or `None` when the resolved version was collected before it
    /// was read: the documented limit of a reader that stalls for more than
    /// `keep_versions - 1` deploys, possible on a loaded machine and not
    /// what this test is after.
    fn read_once(live: &Path) -> Result<Option<Vec<u8>>, String> {
        // `live` itself must always be there (the switch is a rename); the
        // version it names may be collected between reading the link and
        // resolving it, which only means live has moved on since.
        let link = fs::read_link(live).map_err(|e| format!("reading live: {e}"))?;
        let dir = match fs::canonicalize(live) {
            Ok(dir) => dir,
            Err(_) if fs::read_link(live).ok().as_ref() != Some(&link) => return Ok(None),
            Err(e) => return Err(format!("resolving live ({}): {e}", link.display())),
        };
        let pair = fs::read_to_string(dir.join("cert.pem")).and_then(|cert| {
            fs::read_to_string(dir.join("privkey.pem")).map(|key| format!("{cert}{key}"))
        });
        let pair = match pair {
            Ok(pair) => pair,
            // Collected (or being collected): live has moved on since.
            Err(_) if fs::canonicalize(live).ok().as_ref() != Some(&dir) => return Ok(None),
            Err(e) => return Err(format!("{} is incomplete: {e}", dir.display())),
        };
        let (c, k) = spkis(&pair)?;
        if c != k {
            return Err(format!("cert and key of {} do not match", dir.display()));
        }
        let bundle =
            fs::read_to_string(live.join("bundle.pem")).map_err(|e| format!("bundle: {e}"))?;
        let (bc, bk) = spkis(&bundle)?;
        if bc != bk {
            return Err("bundle.pem holds a cert and a key that do not match".into());
        }
        Ok(Some(c))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn readers_never_see_a_mixed_or_missing_version() {
        const READS: usize = 5000;
        let tmp = tempfile::tempdir().expect("tempdir");
        let target = FilesTarget::new(tmp.path());
        let versions = [material("example.com", "a"), material("example.com", "b")];
        let expected: Vec<Vec<u8>> = versions
            .iter()
            .map(|m| {
                spkis(&format!("{}{}", m.leaf_pem, m.key_pem))
                    .expect("pair")
                    .0
            })
            .collect();
        let first = write(&target, &versions[0]).await.expect("first deploy");

        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let (done, live) = (done.clone(), first.live_path.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let result = (0..READS).try_for_each(|_| {
                    read_once(&live).map(|spki| match spki {
                        Some(spki) if !seen.contains(&spki) => seen.push(spki),
                        _ => {}
                    })
                });
                done.store(true, Ordering::SeqCst);
                result.map(|()| seen)
            })
        };
        let mut deploys = 1usize;
        while !done.load(Ordering::SeqCst) {
            write(&target, &versions[deploys % 2])
                .await
                .expect("deploy");
            deploys += 1;
        }
        let seen = reader
            .join()
            .expect("reader thread")
            .unwrap_or_else(|e| panic!("after {deploys} deploys the reader saw: {e}"));
        assert!(deploys > 10, "only {deploys} deploys during the reads");
        assert_eq!(seen.len(), 2, "the reader saw both versions");
        assert!(seen.iter().all(|s| expected.contains(s)));
        assert!(
            archive_dirs(tmp.path(), "example.com").len()
                <= crate::config::DEFAULT_KEEP_VERSIONS + 1
        );
    }
}
