//! `twincert backup`, `twincert restore`, `twincert keys backup-identity`
//! and `twincert keys reseal`: the commands that work on the store
//! directly (not through the API), for disaster recovery and master key
//! rotation.
//!
//! A backup is the store's backend-neutral export (`store::Backups`, JSON
//! lines with a manifest and a SHA-256 trailer) encrypted to one age X25519
//! recipient: whoever holds the file but not the identity reads nothing,
//! and the certificate keys inside stay sealed under the master key as a
//! second layer. The file is written beside its destination and renamed
//! into place when complete, mode 0600.
//!
//! X25519 recipients, as issue 19 asks and as `age-keygen` (age 1.x) makes
//! them; age 0.13 marks them deprecated in favour of its post-quantum
//! hybrid, which older age tools cannot read. Hence the `allow`s below.

use std::io::{BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use crate::clock::{Clock, SystemClock};
use crate::keys::KEY_PURPOSE;
use crate::keys::seal::{account_purpose, install_package_purpose, install_password_purpose};
use crate::store::{AuditDetails, AuditEvent, SecretKind, Store};

/// The actor of audit events written by these commands.
const ACTOR: &str = "cli";

fn create_private(path: &Path) -> anyhow::Result<std::fs::File> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
        .with_context(|| format!("creating {}", path.display()))
}

/// `twincert keys backup-identity --out FILE`: a new age X25519 identity
/// in the file (mode 0600, the format of `age-keygen`); prints its public
/// key, the `--recipient` of `twincert backup`.
#[allow(deprecated)]
pub fn backup_identity(out: &Path) -> anyhow::Result<()> {
    use age::secrecy::ExposeSecret;
    let identity = age::x25519::Identity::generate();
    let public = identity.to_public().to_string();
    let mut f = create_private(out)?;
    writeln!(
        f,
        "# twincert backup identity\n# public key: {public}\n{}",
        identity.to_string().expose_secret()
    )
    .with_context(|| format!("writing {}", out.display()))?;
    println!("{public}");
    Ok(())
}

fn read_identity(path: &Path) -> anyhow::Result<age::x25519::Identity> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the age identity file {}", path.display()))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("AGE-SECRET-KEY-"))
        .ok_or_else(|| {
            anyhow!(
                "{} holds no age X25519 identity (a line AGE-SECRET-KEY-1…); make one with \
                 `twincert keys backup-identity --out FILE` or age-keygen",
                path.display()
            )
        })?;
    // The parse error would not echo the key, but keep it out regardless.
    line.parse()
        .map_err(|_| anyhow!("{}: the AGE-SECRET-KEY line does not parse", path.display()))
}

/// `twincert backup --to FILE --recipient AGE_PUBLIC_KEY`.
#[allow(deprecated)]
pub async fn backup(store_url: &str, to: &Path, recipient: &str) -> anyhow::Result<()> {
    let recipient: age::x25519::Recipient = recipient
        .trim()
        .parse()
        .map_err(|e| anyhow!("--recipient is not an age X25519 public key (age1…): {e}"))?;
    // No migration: the serving process owns the schema; a backup only reads.
    let store = Store::connect(store_url).await?;
    if to.exists() {
        bail!(
            "{} exists; a backup never overwrites a file: choose a new name",
            to.display()
        );
    }
    let partial = partial_path(to);
    let file = create_private(&partial).with_context(|| {
        format!(
            "another backup is writing {} now, or an interrupted one left it (then remove it)",
            partial.display()
        )
    })?;
    let result = async {
        let encryptor =
            age::Encryptor::with_recipients(std::iter::once(&recipient as &dyn age::Recipient))
                .map_err(|e| anyhow!("age: {e}"))?;
        let mut out = encryptor
            .wrap_output(BufWriter::new(file))
            .context("writing the age header")?;
        let manifest = store
            .backups()
            .export(&mut out, SystemClock.now(), env!("CARGO_PKG_VERSION"))
            .await?;
        let buffered = out.finish().context("finishing the age stream")?;
        let file = buffered
            .into_inner()
            .map_err(|e| anyhow!("flushing the backup: {}", e.error()))?;
        file.sync_all().context("syncing the backup")?;
        anyhow::Ok(manifest)
    }
    .await;
    let manifest = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, to)
        .with_context(|| format!("renaming {} to {}", partial.display(), to.display()))?;
    let size = std::fs::metadata(to).map(|m| m.len()).unwrap_or_default();
    let rows: u64 = manifest.tables.iter().map(|t| t.rows).sum();
    let names = manifest
        .tables
        .iter()
        .find(|t| t.name == "names")
        .map(|t| t.rows)
        .unwrap_or_default();
    println!(
        "backup written: {} ({size} bytes; {names} names, {rows} rows in {} tables; schema {}; \
         from {})",
        to.display(),
        manifest.tables.len(),
        manifest.schema_version,
        manifest.source_backend
    );
    Ok(())
}

fn partial_path(to: &Path) -> PathBuf {
    let mut name = to.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    to.with_file_name(name)
}

/// `twincert restore --from FILE --identity AGE_KEY_FILE [--force]`.
pub async fn restore(
    store_url: &str,
    from: &Path,
    identity: &Path,
    force: bool,
) -> anyhow::Result<()> {
    let id = read_identity(identity)?;
    let file = std::fs::File::open(from)
        .with_context(|| format!("opening the backup {}", from.display()))?;
    let decryptor = age::Decryptor::new_buffered(BufReader::new(file))
        .map_err(|e| anyhow!("{} is not a readable age file: {e}", from.display()))?;
    let reader = decryptor
        .decrypt(std::iter::once(&id as &dyn age::Identity))
        .map_err(|e| {
            anyhow!(
                "cannot decrypt {} with the identity in {}: {e}; use the identity whose public \
                 key the backup was made for (--recipient of `twincert backup`)",
                from.display(),
                identity.display()
            )
        })?;
    // A serving process must not see its tables change under it.
    let _lock = crate::server::lock_sqlite(store_url)?;
    let store = crate::server::open_store(store_url).await?;
    let now = SystemClock.now();
    let target = from.display().to_string();
    let report = store
        .backups()
        .import(&mut BufReader::new(reader), force, |m, rows| {
            AuditEvent::ok(
                now,
                ACTOR,
                "store.restore",
                target,
                None,
                Some(AuditDetails::Restored {
                    backup_created_at: m.created_at,
                    source_backend: m.source_backend.clone(),
                    rows,
                    replaced: force,
                }),
            )
        })
        .await
        .map_err(|e| {
            anyhow!(
                "restore from {} failed, the store is unchanged: {e}",
                from.display()
            )
        })?;
    let names = report
        .manifest
        .tables
        .iter()
        .find(|t| t.name == "names")
        .map(|t| t.rows)
        .unwrap_or_default();
    println!(
        "restored {} rows ({names} names) from {} (taken at {} by twincert {} on {}, schema {}) \
         into {}",
        report.rows,
        from.display(),
        report.manifest.created_at,
        report.manifest.twincert_version,
        report.manifest.source_backend,
        report.manifest.schema_version,
        store.backend_name()
    );
    Ok(())
}

/// `twincert keys reseal`: every sealed secret not under the current master
/// key is opened and sealed again under it, `batch` at a time, each batch
/// committed with its audit event. A crash loses at most the batch in
/// flight; running it again picks up what is left (a secret already under
/// the current key is never read).
pub async fn reseal(cfg: &crate::config::Config, batch: u64) -> anyhow::Result<()> {
    if batch == 0 {
        bail!("--batch must be at least 1");
    }
    let sealer = crate::server::load_sealer(cfg)?;
    let store = crate::server::open_store(&cfg.store_url).await?;
    // A secret under an unconfigured key cannot be opened: say which.
    crate::server::check_sealed_key_ids(&store, &sealer).await?;
    let current = sealer.current_key_id().to_string();
    let (mut keys, mut accounts, mut install_secrets, mut idle) = (0u64, 0u64, 0u64, 0u32);
    loop {
        let due = store.keys().sealed_not_under(&current, batch).await?;
        if due.is_empty() {
            break;
        }
        let mut pairs = Vec::with_capacity(due.len());
        for s in due {
            let purpose = match s.kind {
                SecretKind::PrivateKey => KEY_PURPOSE.to_string(),
                SecretKind::Account => account_purpose(&s.id),
                SecretKind::InstallPackage => install_package_purpose(&s.id),
                SecretKind::InstallPassword => install_password_purpose(&s.id),
                SecretKind::AcmeDnsAccount => {
                    let (provider, domain) = s.id.split_once(' ').unwrap_or((&s.id, ""));
                    crate::keys::seal::acme_dns_purpose(provider, domain)
                }
            };
            let new = sealer.reseal(&purpose, &s.sealed).map_err(|e| {
                anyhow!(
                    "re-sealing the {} {}: {e}",
                    match s.kind {
                        SecretKind::PrivateKey => "private key",
                        SecretKind::Account => "ACME account of CA",
                        SecretKind::InstallPackage => "install package",
                        SecretKind::InstallPassword => "password of install package",
                        SecretKind::AcmeDnsAccount => "acme-dns account (provider, domain)",
                    },
                    s.id
                )
            })?;
            pairs.push((s, new));
        }
        let now = SystemClock.now();
        let (k, a, p) = store
            .keys()
            .replace_sealed(&pairs, |k, a, p| {
                AuditEvent::ok(
                    now,
                    ACTOR,
                    "keys.reseal",
                    current.clone(),
                    None,
                    Some(AuditDetails::Resealed {
                        key_id: current.clone(),
                        private_keys: k,
                        accounts: a,
                        install_secrets: p,
                    }),
                )
            })
            .await?;
        keys += k;
        accounts += a;
        install_secrets += p;
        // Crash-safety test hook: die between two committed batches.
        #[cfg(feature = "failpoints")]
        if std::env::var("TWINCERT_FAILPOINT").as_deref() == Ok("reseal_after_batch") {
            eprintln!("failpoint reseal_after_batch: hanging until killed");
            std::future::pending::<()>().await;
        }
        // Rows changed by someone else are read again; a batch that
        // changes nothing twice running means something rewrites them.
        idle = if k + a + p == 0 { idle + 1 } else { 0 };
        if idle >= 2 {
            bail!("re-sealing makes no progress: the same secrets keep changing under it");
        }
    }
    let left = store.keys().sealed_by_key_id().await?;
    println!(
        "re-sealed {keys} private keys and {accounts} ACME accounts under master key '{current}'"
    );
    if install_secrets > 0 {
        println!("re-sealed {install_secrets} install packages and package passwords");
    }
    // Every configured key, 0 included: the old key may go when it shows 0.
    for id in sealer.key_ids() {
        let n = left.iter().find(|(k, _)| k == id).map_or(0, |(_, n)| *n);
        println!("sealed under '{id}': {n}");
    }
    Ok(())
}
