//! Access tokens kept between runs, so that a CI job calling p11jwt many times an hour signs
//! once per access token lifetime, and a hit never touches the PKCS#11 token.
//!
//! One file per (token endpoint, client id, scope, key identity, extra request fields), named
//! by the SHA-256 of that tuple, under `$XDG_CACHE_HOME/p11jwt` (mode 0700, files 0600).
//! Files hold the access token response, never an assertion. Writes go to a temp file that is
//! renamed into place, so concurrent runs see a whole file or none.
//!
//! The directory and its files are trusted only when this user owns them and nobody else can
//! write them (nor read the files): otherwise another user could plant an access token of
//! their choosing, or read ours. This is checked on every read and write, not only when the
//! directory is created, since it may have been made by someone else first.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::TokenResponse;
use crate::secret::Secret;

/// An access token is reused until this long before it expires, so that it does not expire
/// between being read here and reaching the API.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(60);

/// The longest an access token is kept, whatever `expires_in` says: a day. A server's
/// `expires_in` near `u64::MAX` would otherwise overflow the expiry arithmetic, and a token
/// that outlives a day in a file is more exposure than a signature a day saves.
pub const MAX_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// A temp file older than this was left by a run that was killed between writing and
/// renaming it; it holds an access token, so it is removed.
const STALE_TEMP: Duration = Duration::from_secs(5 * 60);

/// Whether an unusable cache directory was already warned about in this process: once is
/// enough, whether load or store finds it.
static WARNED_ABOUT_DIR: AtomicBool = AtomicBool::new(false);

/// What identifies an access token. `key` names the signing key by what is known without
/// opening the PKCS#11 token (see the CLI's cache key for the choice).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CacheKey {
    pub token_endpoint: String,
    pub client_id: String,
    pub scope: Option<String>,
    pub key: String,
    /// Anything else that changes the access token: resources, extra form fields, audience.
    pub extra: Vec<String>,
}

impl CacheKey {
    /// The SHA-256 of the key, in hex: the file's name without its extension.
    fn file_stem(&self) -> String {
        // Serializing plain strings cannot fail.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        digest.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn file_name(&self) -> String {
        format!("{}.json", self.file_stem())
    }
}

/// The file's content.
#[derive(Serialize, Deserialize)]
struct Entry {
    token_endpoint: String,
    client_id: String,
    /// Unix seconds after which the access token is not used.
    use_until: u64,
    token_type: String,
    scope: Option<String>,
    /// The token response as the server sent it (it holds the access token).
    response: serde_json::Value,
}

/// The cache directory and what to do with it.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// `dirs::cache_dir()/p11jwt`: `$XDG_CACHE_HOME/p11jwt`, else `~/.cache/p11jwt`.
    pub fn default_dir() -> Option<PathBuf> {
        dirs::cache_dir().map(|d| d.join("p11jwt"))
    }

    pub fn new(dir: PathBuf) -> Cache {
        Cache { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn path(&self, key: &CacheKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// A cached access token still valid for [`SAFETY_MARGIN`], with `expires_in` counting
    /// down. Anything unreadable, foreign or loose is a miss, logged.
    pub fn load(&self, key: &CacheKey) -> Option<TokenResponse> {
        match fs::metadata(&self.dir) {
            Ok(meta) => {
                if let Err(why) = check_owned(&meta, Kind::Dir) {
                    self.warn_about_dir(&why);
                    return None;
                }
            }
            Err(_) => return None,
        }
        let path = self.path(key);
        let text = match read_private(&path) {
            Ok(Some(text)) => text,
            Ok(None) => return None,
            Err(why) => {
                log::warn!("ignoring cached access token {}: {why}", path.display());
                return None;
            }
        };
        let entry: Entry = match serde_json::from_str(&text) {
            Ok(entry) => entry,
            Err(e) => {
                log::warn!("ignoring cached access token {}: {e}", path.display());
                return None;
            }
        };
        if entry.token_endpoint != key.token_endpoint || entry.client_id != key.client_id {
            return None;
        }
        let now = unix_now();
        if now >= entry.use_until {
            log::info!(
                "cached access token {} is too close to expiry",
                path.display()
            );
            return None;
        }
        let remaining = (entry.use_until - now)
            .saturating_add(SAFETY_MARGIN.as_secs())
            .min(MAX_LIFETIME.as_secs());
        let mut response = entry.response;
        let access_token = response.get("access_token")?.as_str()?.to_owned();
        response["expires_in"] = remaining.into();
        Some(TokenResponse {
            access_token: Secret::new(access_token),
            token_type: entry.token_type,
            expires_in: Some(remaining),
            scope: entry.scope,
            body: Secret::new(response.to_string()),
        })
    }

    /// Keeps `response` for `key`, for at most [`MAX_LIFETIME`]. `Ok(false)` when it is not
    /// cached: no `expires_in` (its lifetime is unknown), one shorter than the safety margin,
    /// or a directory that is not safely this user's (warned about once).
    pub fn store(&self, key: &CacheKey, response: &TokenResponse) -> Result<bool, Error> {
        let Some(expires_in) = response.expires_in else {
            return Ok(false);
        };
        if expires_in <= SAFETY_MARGIN.as_secs() {
            return Ok(false);
        }
        let lifetime = expires_in.min(MAX_LIFETIME.as_secs()) - SAFETY_MARGIN.as_secs();
        let body: serde_json::Value = serde_json::from_str(response.body.expose())
            .map_err(|e| self.error("the token response is not JSON", e))?;
        let entry = Entry {
            token_endpoint: key.token_endpoint.clone(),
            client_id: key.client_id.clone(),
            use_until: unix_now().saturating_add(lifetime),
            token_type: response.token_type.clone(),
            scope: response.scope.clone(),
            response: body,
        };
        let text = Zeroizing::new(
            serde_json::to_string(&entry).map_err(|e| self.error("cannot serialize", e))?,
        );
        if !self.create_dir()? {
            return Ok(false);
        }
        self.remove_temp_files(is_temp_of_any, Some(STALE_TEMP));
        // The rename replaces whatever file was there, whoever owned it.
        write_atomically(&self.path(key), text.as_bytes())
            .map_err(|e| self.error("cannot write", e))?;
        Ok(true)
    }

    /// Removes the entry for `key`, and any temp file a killed run left for it; `Ok(false)`
    /// when there was no entry.
    pub fn forget(&self, key: &CacheKey) -> Result<bool, Error> {
        let stem = key.file_stem();
        self.remove_temp_files(|name| is_temp_of(name, &stem), None);
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("cannot remove", e)),
        }
    }

    /// Creates the directory 0700 if it is missing; `Ok(false)` when it exists but is not
    /// safely this user's (warned about once): it is then not used, rather than tightened,
    /// because whoever could write it may already have planted entries.
    fn create_dir(&self) -> Result<bool, Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| self.error("cannot create", e))?;
        let meta = fs::metadata(&self.dir).map_err(|e| self.error("cannot read", e))?;
        match check_owned(&meta, Kind::Dir) {
            Ok(()) => Ok(true),
            Err(why) => {
                self.warn_about_dir(&why);
                Ok(false)
            }
        }
    }

    /// Removes temp files whose names `matches` and, when `min_age` is given, that have not
    /// been written for that long (a younger one may belong to a run writing it now). Only
    /// this user's files are touched; failures are logged, never fatal.
    fn remove_temp_files(&self, matches: impl Fn(&str) -> bool, min_age: Option<Duration>) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        for entry in entries.flatten() {
            let name = entry.file_name();
            if !name.to_str().is_some_and(&matches) {
                continue;
            }
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            if meta.uid() != current_uid() {
                continue;
            }
            let age = meta
                .modified()
                .ok()
                .and_then(|m| now.duration_since(m).ok())
                .unwrap_or_default();
            if min_age.is_some_and(|min| age < min) {
                continue;
            }
            match fs::remove_file(entry.path()) {
                Ok(()) => log::info!("removed a temp file left by an earlier run: {name:?}"),
                Err(e) => log::warn!("cannot remove temp file {name:?}: {e}"),
            }
        }
    }

    fn warn_about_dir(&self, why: &str) {
        if !WARNED_ABOUT_DIR.swap(true, Ordering::Relaxed) {
            log::warn!(
                "not using the access token cache {}: {why}; run `chmod 700` on it if it is \
                 yours, or set XDG_CACHE_HOME elsewhere, or pass --no-cache",
                self.dir.display()
            );
        }
    }

    fn error(&self, what: &'static str, detail: impl fmt::Display) -> Error {
        Error {
            dir: self.dir.clone(),
            what,
            detail: detail.to_string(),
        }
    }
}

/// The file's text when it exists, is this user's and only this user can read or write it.
/// The checks are made on the opened file, so that it cannot be swapped between check and
/// read.
fn read_private(path: &Path) -> Result<Option<Zeroizing<String>>, String> {
    use std::io::Read as _;

    let mut file = match fs::File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    let meta = file.metadata().map_err(|e| e.to_string())?;
    check_owned(&meta, Kind::File)?;
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(Some(text))
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
}

/// This user's, and nobody else may write it; a file nobody else may read either (it holds an
/// access token; the directory's listing only shows hashes).
fn check_owned(meta: &fs::Metadata, kind: Kind) -> Result<(), String> {
    let (uid, mode) = (meta.uid(), meta.mode() & 0o777);
    let is_kind = match kind {
        Kind::Dir => meta.is_dir(),
        Kind::File => meta.is_file(),
    };
    if !is_kind {
        return Err("it is not a regular file or directory".into());
    }
    if uid != current_uid() {
        return Err(format!(
            "it belongs to uid {uid}, not to this user (uid {})",
            current_uid()
        ));
    }
    let forbidden = match kind {
        Kind::Dir => 0o022,
        Kind::File => 0o077,
    };
    if mode & forbidden != 0 {
        let who = match kind {
            Kind::Dir => "write to",
            Kind::File => "read or write",
        };
        return Err(format!("its mode {mode:o} lets others {who} it"));
    }
    Ok(())
}

/// The real uid of this process. rustix's getuid is a safe wrapper around the system call,
/// which cannot fail (POSIX); the crate forbids unsafe code, so libc cannot be called here.
/// The real uid, not the effective one: the cache is the invoking user's.
fn current_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// `<64 hex>.<32 hex>.tmp`: a temp file [`write_atomically`] makes for some entry.
fn is_temp_of_any(name: &str) -> bool {
    name.get(..64)
        .is_some_and(|stem| stem.bytes().all(|b| b.is_ascii_hexdigit()) && is_temp_of(name, stem))
}

/// A temp file [`write_atomically`] makes for the entry whose file stem is `stem`.
fn is_temp_of(name: &str, stem: &str) -> bool {
    let Some(middle) = name
        .strip_prefix(stem)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(|rest| rest.strip_suffix(".tmp"))
    else {
        return false;
    };
    middle.len() == 32 && middle.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Writes a temp file created 0600 next to `path`, then renames it over `path`: rename is
/// atomic on one file system, so a concurrent reader sees the old file or the new one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let unique = uuid::Uuid::new_v4().simple().to_string();
    let temp = path.with_extension(format!("{unique}.tmp"));
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()));
    let renamed = written.and_then(|()| fs::rename(&temp, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&temp);
    }
    renamed
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A cache directory or file that could not be used.
#[derive(Debug)]
pub struct Error {
    pub dir: PathBuf,
    pub what: &'static str,
    pub detail: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "access token cache {}: {}: {}\ncheck the directory's owner and mode, set \
             XDG_CACHE_HOME elsewhere, or pass --no-cache",
            self.dir.display(),
            self.what,
            self.detail
        )
    }
}

impl From<Error> for super::Error {
    fn from(e: Error) -> super::Error {
        super::Error::Cache(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    fn key() -> CacheKey {
        CacheKey {
            token_endpoint: "https://as.example/token".into(),
            client_id: "c".into(),
            scope: Some("s".into()),
            key: "kid:k1".into(),
            extra: vec![],
        }
    }

    fn response(expires_in: Option<u64>) -> TokenResponse {
        let body = serde_json::json!({
            "access_token": "at-123", "token_type": "Bearer", "expires_in": expires_in,
        });
        TokenResponse {
            access_token: Secret::new("at-123".into()),
            token_type: "Bearer".into(),
            expires_in,
            scope: None,
            body: Secret::new(body.to_string()),
        }
    }

    #[test]
    fn stores_privately_and_reloads_until_near_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("p11jwt"));

        assert!(cache.store(&key(), &response(Some(3600))).unwrap());
        let loaded = cache.load(&key()).expect("hit");
        assert_eq!(loaded.access_token.expose(), "at-123");
        assert!(loaded.expires_in.unwrap() <= 3600);

        let dir_mode = fs::metadata(cache.dir()).unwrap().mode() & 0o777;
        assert_eq!(dir_mode, 0o700);
        for file in fs::read_dir(cache.dir()).unwrap() {
            assert_eq!(file.unwrap().metadata().unwrap().mode() & 0o777, 0o600);
        }

        let mut other = key();
        other.scope = Some("t".into());
        assert!(cache.load(&other).is_none());
        assert!(cache.forget(&key()).unwrap());
        assert!(cache.load(&key()).is_none());
        assert!(!cache.forget(&key()).unwrap());
    }

    #[test]
    fn no_expires_in_or_a_short_one_is_not_cached() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_owned());
        assert!(!cache.store(&key(), &response(None)).unwrap());
        assert!(!cache.store(&key(), &response(Some(30))).unwrap());
        assert!(cache.load(&key()).is_none());
    }

    #[test]
    fn concurrent_writers_never_leave_a_partial_file() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("p11jwt"));
        cache.store(&key(), &response(Some(3600))).unwrap();

        // Writers and readers race on one entry: every read sees a whole file.
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let cache = cache.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        cache.store(&key(), &response(Some(3600))).unwrap();
                        assert!(cache.load(&key()).is_some());
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        let leftovers = fs::read_dir(cache.dir()).unwrap().count();
        assert_eq!(leftovers, 1, "no temp files left behind");
    }

    #[test]
    fn a_file_others_can_read_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().to_owned());
        cache.store(&key(), &response(Some(3600))).unwrap();
        let path = cache.path(&key());
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        assert!(cache.load(&key()).is_none());
    }

    #[test]
    fn a_directory_others_can_write_is_used_neither_to_read_nor_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("p11jwt"));
        assert!(cache.store(&key(), &response(Some(3600))).unwrap());

        // Anyone could have planted the entry: it is ignored, and nothing is written there.
        fs::set_permissions(cache.dir(), fs::Permissions::from_mode(0o777)).unwrap();
        assert!(cache.load(&key()).is_none());
        let mut other = key();
        other.scope = Some("t".into());
        assert!(!cache.store(&other, &response(Some(3600))).unwrap());
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 1);
        assert_eq!(
            fs::metadata(cache.dir()).unwrap().mode() & 0o777,
            0o777,
            "not silently tightened"
        );

        fs::set_permissions(cache.dir(), fs::Permissions::from_mode(0o700)).unwrap();
        assert!(cache.load(&key()).is_some());
    }

    #[test]
    fn entries_and_directories_of_another_user_are_ignored() {
        if current_uid() != 0 {
            eprintln!("skipped: giving a file to another user needs root");
            return;
        }
        let nobody = Some(65534);
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("p11jwt"));
        cache.store(&key(), &response(Some(3600))).unwrap();

        // A file of another user, mode 0600 or not, is not trusted.
        std::os::unix::fs::chown(cache.path(&key()), nobody, nobody).unwrap();
        assert!(cache.load(&key()).is_none());

        // Nor is a directory of another user, for reading or writing.
        std::os::unix::fs::chown(cache.path(&key()), Some(0), Some(0)).unwrap();
        assert!(cache.load(&key()).is_some());
        std::os::unix::fs::chown(cache.dir(), nobody, nobody).unwrap();
        assert!(cache.load(&key()).is_none());
        assert!(!cache.store(&key(), &response(Some(3600))).unwrap());
    }

    #[test]
    fn a_huge_expires_in_is_kept_for_a_day_at_most() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("p11jwt"));

        assert!(cache.store(&key(), &response(Some(u64::MAX))).unwrap());

        let loaded = cache.load(&key()).expect("hit");
        assert!(loaded.expires_in.unwrap() <= MAX_LIFETIME.as_secs());
        let body: serde_json::Value = serde_json::from_str(loaded.body.expose()).unwrap();
        assert!(body["expires_in"].as_u64().unwrap() <= MAX_LIFETIME.as_secs());
    }

    #[test]
    fn temp_files_left_by_killed_runs_are_removed_on_store_and_forget() {
        let dir = tempfile::tempdir().unwrap();
        let cache = Cache::new(dir.path().join("p11jwt"));
        cache.store(&key(), &response(Some(3600))).unwrap();
        let temp = |age: Duration| {
            let unique = uuid::Uuid::new_v4().simple().to_string();
            let path = cache.path(&key()).with_extension(format!("{unique}.tmp"));
            let file = fs::File::create(&path).unwrap();
            file.set_modified(SystemTime::now() - age).unwrap();
            path
        };
        let stale = temp(STALE_TEMP * 2);
        let fresh = temp(Duration::ZERO);
        let unrelated = cache.dir().join("notes.tmp");
        fs::write(&unrelated, "kept").unwrap();

        // A store for any key removes stale temp files, and leaves a fresh one to its writer.
        let mut other = key();
        other.scope = Some("t".into());
        cache.store(&other, &response(Some(3600))).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists());

        // --forget removes this key's temp files, whatever their age.
        assert!(cache.forget(&key()).unwrap());
        assert!(!fresh.exists());
        assert!(unrelated.exists());
    }
}
