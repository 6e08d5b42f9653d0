//! Access tokens kept between runs, so that a CI job calling p11jwt many times an hour signs
//! once per access token lifetime, and a hit never touches the PKCS#11 token.
//!
//! One file per (token endpoint, client id, scope, key identity, extra request fields), named
//! by the SHA-256 of that tuple, under `$XDG_CACHE_HOME/p11jwt` (mode 0700, files 0600).
//! Files hold the access token response, never an assertion. Writes go to a temp file that is
//! renamed into place, so concurrent runs see a whole file or none.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use super::TokenResponse;
use crate::secret::Secret;

/// An access token is reused until this long before it expires, so that it does not expire
/// between being read here and reaching the API.
pub const SAFETY_MARGIN: Duration = Duration::from_secs(60);

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
    fn file_name(&self) -> String {
        // Serializing plain strings cannot fail.
        let canonical = serde_json::to_vec(self).unwrap_or_default();
        let digest = Sha256::digest(&canonical);
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        format!("{hex}.json")
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
        let remaining = entry.use_until - now + SAFETY_MARGIN.as_secs();
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

    /// Keeps `response` for `key`. `Ok(false)` when it cannot be cached: no `expires_in`
    /// (its lifetime is unknown), or one shorter than the safety margin.
    pub fn store(&self, key: &CacheKey, response: &TokenResponse) -> Result<bool, Error> {
        let Some(expires_in) = response.expires_in else {
            return Ok(false);
        };
        if expires_in <= SAFETY_MARGIN.as_secs() {
            return Ok(false);
        }
        let body: serde_json::Value = serde_json::from_str(response.body.expose())
            .map_err(|e| self.error("the token response is not JSON", e))?;
        let entry = Entry {
            token_endpoint: key.token_endpoint.clone(),
            client_id: key.client_id.clone(),
            use_until: unix_now() + expires_in - SAFETY_MARGIN.as_secs(),
            token_type: response.token_type.clone(),
            scope: response.scope.clone(),
            response: body,
        };
        let text = Zeroizing::new(
            serde_json::to_string(&entry).map_err(|e| self.error("cannot serialize", e))?,
        );
        self.create_dir()?;
        write_atomically(&self.path(key), text.as_bytes())
            .map_err(|e| self.error("cannot write", e))?;
        Ok(true)
    }

    /// Removes the entry for `key`; `Ok(false)` when there was none.
    pub fn forget(&self, key: &CacheKey) -> Result<bool, Error> {
        match fs::remove_file(self.path(key)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(self.error("cannot remove", e)),
        }
    }

    /// The directory, 0700, tightened if it already exists looser.
    fn create_dir(&self) -> Result<(), Error> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| self.error("cannot create", e))?;
        let mode = fs::metadata(&self.dir)
            .map_err(|e| self.error("cannot read", e))?
            .mode();
        if mode & 0o077 != 0 {
            fs::set_permissions(&self.dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| self.error("cannot restrict to mode 0700", e))?;
        }
        Ok(())
    }

    fn error(&self, what: &'static str, detail: impl fmt::Display) -> Error {
        Error {
            dir: self.dir.clone(),
            what,
            detail: detail.to_string(),
        }
    }
}

use std::os::unix::fs::MetadataExt as _;

/// The file's text when it exists and only its owner can read it.
fn read_private(path: &Path) -> Result<Option<Zeroizing<String>>, String> {
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.to_string()),
    };
    if meta.mode() & 0o077 != 0 {
        return Err(format!(
            "its mode {:o} lets others read it",
            meta.mode() & 0o777
        ));
    }
    let text = fs::read_to_string(path).map_err(|e| e.to_string())?;
    Ok(Some(Zeroizing::new(text)))
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
}
