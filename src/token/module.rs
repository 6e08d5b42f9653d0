//! Loading the module and choosing the slot and token, as a `pkcs11:` URI or the flags ask.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CkError, RvError};
use cryptoki::slot::Slot;

use crate::uri::{Pkcs11Uri, TokenFields};

use super::error::ckr;
use super::{Error, OpenOptions, TokenDescription, SOFTHSM_PATHS};

pub(super) fn retry_pause(attempt: u32) -> Duration {
    // Jitter from the clock's nanoseconds is enough to spread processes that started together.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let base = 15 * u64::from(attempt);
    Duration::from_millis(base + u64::from(nanos % 40))
}

/// Directories where PKCS#11 modules are installed (p11-kit's module directories, and
/// SoftHSM's own), searched for a URI's `module-name`.
pub const MODULE_DIRS: &[&str] = &[
    "/usr/lib/x86_64-linux-gnu/pkcs11",
    "/usr/lib/aarch64-linux-gnu/pkcs11",
    "/usr/lib64/pkcs11",
    "/usr/lib/pkcs11",
    "/usr/local/lib/pkcs11",
    "/usr/lib/softhsm",
    "/usr/lib/x86_64-linux-gnu/softhsm",
    "/usr/lib/aarch64-linux-gnu/softhsm",
    "/usr/local/lib/softhsm",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib64",
    "/usr/lib",
];

/// RFC 7512 §2.4 `module-name`: a module's name without directory or suffix ("softhsm2",
/// "opensc-pkcs11"), looked up as NAME.so or libNAME.so in [`MODULE_DIRS`].
pub fn find_module_by_name(name: &str) -> Result<PathBuf, Error> {
    let searched = || MODULE_DIRS.iter().map(|d| d.to_string()).collect();
    if name.contains('/') || name.contains('\0') {
        return Err(Error::ModuleNameNotFound {
            name: name.to_owned(),
            searched: searched(),
        });
    }
    let files = [format!("{name}.so"), format!("lib{name}.so")];
    MODULE_DIRS
        .iter()
        .flat_map(|dir| files.iter().map(move |f| Path::new(dir).join(f)))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::ModuleNameNotFound {
            name: name.to_owned(),
            searched: searched(),
        })
}

pub(super) fn resolve_module(module: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(path) = module {
        if !path.exists() {
            return Err(Error::ModuleMissing {
                path: path.to_owned(),
            });
        }
        return Ok(path.to_owned());
    }
    SOFTHSM_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or(Error::NoDefaultModule)
}

pub(super) fn load_module(path: &Path) -> Result<Pkcs11, Error> {
    let ctx = Pkcs11::new(path).map_err(|e| match e {
        CkError::MissingSymbol(_) => Error::NotPkcs11Module {
            path: path.to_owned(),
        },
        CkError::LibraryLoading(e) => Error::ModuleLoad {
            path: path.to_owned(),
            detail: e.to_string(),
        },
        e => Error::ModuleLoad {
            path: path.to_owned(),
            detail: e.to_string(),
        },
    })?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CkError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => Ok(ctx),
        Err(CkError::Pkcs11(rv, _)) => Err(Error::Initialize {
            path: path.to_owned(),
            rv: ckr(rv),
        }),
        Err(e) => Err(Error::ModuleLoad {
            path: path.to_owned(),
            detail: e.to_string(),
        }),
    }
}

pub(super) fn select_token(
    ctx: &Pkcs11,
    options: &OpenOptions,
) -> Result<(Slot, TokenDescription), Error> {
    if let Some(uri) = options.uri.as_ref().filter(|u| u.has_library_attributes()) {
        check_library(ctx, uri)?;
    }
    let slots = ctx
        .get_slots_with_token()
        .map_err(|e| Error::ck("C_GetSlotList", e))?;
    if slots.is_empty() {
        return Err(Error::NoToken);
    }
    let mut all = Vec::new();
    let mut uninitialized = Vec::new();
    for slot in slots {
        let info = match ctx.get_token_info(slot) {
            Ok(info) => info,
            // A slot whose token went away between the two calls is simply not a candidate.
            Err(CkError::Pkcs11(RvError::TokenNotPresent | RvError::TokenNotRecognized, _)) => {
                continue
            }
            Err(e) => return Err(Error::ck("C_GetTokenInfo", e)),
        };
        if !info.token_initialized() {
            uninitialized.push(slot.id());
            continue;
        }
        let slot_ok = slot_matches(ctx, slot, options)?;
        let description = TokenDescription {
            label: info.label().to_owned(),
            manufacturer: info.manufacturer_id().to_owned(),
            model: info.model().to_owned(),
            serial: info.serial_number().to_owned(),
            slot_id: slot.id(),
            login_required: info.login_required(),
            protected_authentication_path: info.protected_authentication_path(),
        };
        all.push((slot, description, slot_ok));
    }
    if all.is_empty() && !uninitialized.is_empty() {
        return Err(Error::TokenNotInitialized {
            slots: uninitialized,
        });
    }

    let matches: Vec<(Slot, TokenDescription)> = all
        .iter()
        .filter(|(_, _, slot_ok)| *slot_ok)
        .map(|(slot, d, _)| (*slot, d.clone()))
        .filter(|(_, d)| options.token_label.as_deref().is_none_or(|l| l == d.label))
        .filter(|(_, d)| {
            options.uri.as_ref().is_none_or(|uri| {
                uri.matches_token(&TokenFields {
                    label: &d.label,
                    manufacturer: &d.manufacturer,
                    serial: &d.serial,
                    model: &d.model,
                })
            })
        })
        .collect();
    match matches.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(Error::TokenNotFound {
            wanted: describe_token_wanted(options),
            available: all.iter().map(|(_, d, _)| describe_token(d)).collect(),
        }),
        many => Err(Error::SeveralTokens {
            names: many.iter().map(|(_, d)| describe_token(d)).collect(),
        }),
    }
}

/// RFC 7512 §2.5: the slot attributes of a URI (slot-id, slot-description,
/// slot-manufacturer) against CK_SLOT_INFO. A slot the URI does not name is not a candidate.
fn slot_matches(ctx: &Pkcs11, slot: Slot, options: &OpenOptions) -> Result<bool, Error> {
    let Some(uri) = options.uri.as_ref().filter(|u| u.has_slot_attributes()) else {
        return Ok(true);
    };
    let info = ctx
        .get_slot_info(slot)
        .map_err(|e| Error::ck("C_GetSlotInfo", e))?;
    Ok(uri.matches_slot(slot.id(), info.slot_description(), info.manufacturer_id()))
}

/// RFC 7512 §2.5: the library attributes of a URI against the module's CK_INFO.
fn check_library(ctx: &Pkcs11, uri: &Pkcs11Uri) -> Result<(), Error> {
    let info = ctx
        .get_library_info()
        .map_err(|e| Error::ck("C_GetInfo", e))?;
    let version = info.library_version();
    let version = (version.major(), version.minor());
    let (manufacturer, description) = (info.manufacturer_id(), info.library_description());
    if uri.matches_library(manufacturer, description, version) {
        return Ok(());
    }
    Err(Error::LibraryMismatch {
        wanted: uri.to_string(),
        actual: format!(
            "{:?} from {:?}, version {}.{}",
            description.trim_end(),
            manufacturer.trim_end(),
            version.0,
            version.1
        ),
    })
}

fn describe_token(d: &TokenDescription) -> String {
    format!(
        "token {:?} (serial {}, slot {})",
        d.label, d.serial, d.slot_id
    )
}

fn describe_token_wanted(options: &OpenOptions) -> String {
    match (&options.token_label, &options.uri) {
        (Some(label), Some(uri)) => format!("token {label:?} and {uri}"),
        (Some(label), None) => format!("token {label:?}"),
        (None, Some(uri)) => format!("a token matching {uri}"),
        (None, None) => "a token".into(),
    }
}
