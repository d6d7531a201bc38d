//! Who is asking: API keys are compared by their SHA-256 digest (only digests are
//! configured, so a leaked config reveals no key). An admin key reads every tenant; a
//! tenant key reads its own tenant only.

use std::collections::HashMap;

use axum::http::HeaderMap;
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// The caller behind a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    Admin,
    Tenant(String),
}

impl Principal {
    /// Whether this caller may read `tenant`.
    pub fn may_read(&self, tenant: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant(t) => t == tenant,
        }
    }

    /// `Ok` when this caller may read `tenant`, else 403.
    pub fn check_tenant(&self, tenant: &str) -> Result<(), ApiError> {
        if self.may_read(tenant) {
            Ok(())
        } else {
            Err(ApiError::forbidden())
        }
    }

    /// `Ok` for an admin, else 403.
    pub fn check_admin(&self) -> Result<(), ApiError> {
        match self {
            Principal::Admin => Ok(()),
            Principal::Tenant(_) => Err(ApiError::forbidden()),
        }
    }
}

/// Errors in the key settings (fatal at start-up).
#[derive(Debug, thiserror::Error)]
pub enum KeyConfigError {
    /// A digest is not 64 hex digits.
    #[error("{0:?} is not a SHA-256 digest (64 hex digits)")]
    BadDigest(String),
    /// A tenant key entry is not `<sha256-hex>=<tenant>`.
    #[error("tenant key entry {0:?} is not <sha256-hex>=<tenant>")]
    BadEntry(String),
    /// The same digest is configured twice.
    #[error("key digest {0} is configured twice")]
    Duplicate(String),
}

/// Configured keys, by digest.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    by_digest: HashMap<[u8; 32], Principal>,
}

fn digest_of_hex(s: &str) -> Result<[u8; 32], KeyConfigError> {
    let bytes = hex::decode(s.trim()).map_err(|_| KeyConfigError::BadDigest(s.into()))?;
    bytes
        .try_into()
        .map_err(|_| KeyConfigError::BadDigest(s.into()))
}

/// The SHA-256 digest of a key, as hex: what to put in the settings for a new key.
pub fn digest_hex(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl Keys {
    /// From `admin` (comma-separated digests) and `tenants` (comma-separated
    /// `<digest>=<tenant>` entries).
    pub fn parse(admin: &str, tenants: &str) -> Result<Keys, KeyConfigError> {
        let mut keys = Keys::default();
        let mut add = |digest: [u8; 32], p: Principal| {
            if keys.by_digest.insert(digest, p).is_some() {
                return Err(KeyConfigError::Duplicate(hex::encode(digest)));
            }
            Ok(())
        };
        for d in admin.split(',').filter(|s| !s.trim().is_empty()) {
            add(digest_of_hex(d)?, Principal::Admin)?;
        }
        for entry in tenants.split(',').filter(|s| !s.trim().is_empty()) {
            let (d, tenant) = entry
                .split_once('=')
                .ok_or_else(|| KeyConfigError::BadEntry(entry.into()))?;
            if tenant.is_empty() {
                return Err(KeyConfigError::BadEntry(entry.into()));
            }
            add(digest_of_hex(d)?, Principal::Tenant(tenant.to_string()))?;
        }
        Ok(keys)
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// The tenants that have a key (the dashboard's tenant picker lists them for admins).
    pub fn tenants(&self) -> impl Iterator<Item = String> + '_ {
        self.by_digest.values().filter_map(|p| match p {
            Principal::Tenant(t) => Some(t.clone()),
            Principal::Admin => None,
        })
    }

    /// The caller of a request. With no keys configured (allowed only on a loopback
    /// address, see `config`), every caller is an admin.
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        if self.is_empty() {
            return Ok(Principal::Admin);
        }
        let key = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(ApiError::unauthorized)?;
        // The map is looked up by the digest, so the time taken depends on the digest of
        // what the caller sent, never on how much of a real key it matched.
        let digest: [u8; 32] = Sha256::digest(key.trim().as_bytes()).into();
        self.by_digest
            .get(&digest)
            .cloned()
            .ok_or_else(ApiError::unauthorized)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with_key(k: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            axum::http::header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {k}")).unwrap(),
        );
        h
    }

    #[test]
    fn keys_are_matched_by_digest() {
        let keys = Keys::parse(
            &digest_hex("root-key"),
            &format!("{}=acme,{}=globex", digest_hex("acme-key"), digest_hex("g")),
        )
        .unwrap();
        assert_eq!(
            keys.authenticate(&with_key("root-key")).unwrap(),
            Principal::Admin
        );
        let acme = keys.authenticate(&with_key("acme-key")).unwrap();
        assert_eq!(acme, Principal::Tenant("acme".into()));
        assert!(acme.may_read("acme") && !acme.may_read("globex"));
        assert!(keys.authenticate(&with_key("nope")).is_err());
        assert!(keys.authenticate(&HeaderMap::new()).is_err());
        // The digest itself is not a key.
        assert!(keys
            .authenticate(&with_key(&digest_hex("root-key")))
            .is_err());
    }

    #[test]
    fn bad_settings_fail() {
        assert!(Keys::parse("abc", "").is_err());
        assert!(Keys::parse("", &digest_hex("x")).is_err());
        let d = digest_hex("x");
        assert!(Keys::parse(&d, &format!("{d}=acme")).is_err());
    }
}
