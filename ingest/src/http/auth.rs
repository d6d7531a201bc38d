//! Per-tenant API keys. Only SHA-256 hashes of the keys are configured and kept in memory;
//! a presented key is hashed and compared with every configured hash in constant time, so
//! neither the comparison nor which entry matched shows in the timing.
//!
//! Configuration: `tenant:sha256hex` pairs separated by commas, e.g.
//! `acme:9f86d0…,globex:60303a…`. A tenant may have several keys (rotation). The hash of a
//! key is `printf %s "$KEY" | sha256sum`.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// The configured keys.
#[derive(Clone)]
pub struct ApiKeys {
    entries: Vec<(String, [u8; 32])>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tenants: Vec<&str> = self.entries.iter().map(|(t, _)| t.as_str()).collect();
        f.debug_struct("ApiKeys")
            .field("tenants", &tenants)
            .finish()
    }
}

/// SHA-256 of `key`, lowercase hex: what the configuration holds for it.
pub fn hash_key(key: &str) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))
}

impl ApiKeys {
    /// Parses `tenant:sha256hex,tenant:sha256hex,…`.
    pub fn parse(spec: &str) -> anyhow::Result<ApiKeys> {
        let mut entries = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            // The hash never contains ':', a tenant might: split at the last one.
            let (tenant, hash) = item.rsplit_once(':').ok_or_else(|| {
                anyhow::anyhow!("API key entry {item:?} is not `tenant:sha256hex`")
            })?;
            let tenant = tenant.trim();
            anyhow::ensure!(!tenant.is_empty(), "API key entry with an empty tenant");
            let mut digest = [0u8; 32];
            hex::decode_to_slice(hash.trim(), &mut digest).map_err(|e| {
                anyhow::anyhow!(
                    "the API key hash of tenant {tenant:?} is not 64 hex digits (SHA-256): {e}"
                )
            })?;
            entries.push((tenant.to_string(), digest));
        }
        Ok(ApiKeys { entries })
    }

    /// Whether no key is configured.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The configured tenants (a tenant with several keys appears once per key).
    pub fn tenants(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(t, _)| t.as_str())
    }

    /// Number of configured keys.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The tenant whose key `key` is.
    pub fn tenant_of(&self, key: &str) -> Option<&str> {
        let presented: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        let mut found: Option<&str> = None;
        // Look at every entry, matched or not.
        for (tenant, digest) in &self.entries {
            if bool::from(digest.ct_eq(&presented)) && found.is_none() {
                found = Some(tenant);
            }
        }
        found
    }

    /// The tenant of an `Authorization` header value (`Bearer <key>`).
    pub fn authenticate(&self, authorization: Option<&str>) -> Option<&str> {
        let value = authorization?.trim();
        let (scheme, key) = value.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return None;
        }
        let key = key.trim();
        if key.is_empty() {
            return None;
        }
        self.tenant_of(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> ApiKeys {
        ApiKeys::parse(&format!(
            "acme:{}, globex:{} ,acme:{}",
            hash_key("acme-secret"),
            hash_key("globex-secret").to_uppercase(),
            hash_key("acme-rotated")
        ))
        .unwrap()
    }

    #[test]
    fn known_sha256() {
        assert_eq!(
            hash_key("test"),
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
        );
    }

    #[test]
    fn bearer_keys_map_to_their_tenant() {
        let k = keys();
        assert_eq!(k.len(), 3);
        assert_eq!(k.authenticate(Some("Bearer acme-secret")), Some("acme"));
        assert_eq!(k.authenticate(Some("bearer  acme-rotated ")), Some("acme"));
        assert_eq!(k.authenticate(Some("Bearer globex-secret")), Some("globex"));
        assert_eq!(k.authenticate(Some("Bearer unknown")), None);
        assert_eq!(k.authenticate(Some("Basic acme-secret")), None);
        assert_eq!(k.authenticate(Some("Bearer ")), None);
        assert_eq!(k.authenticate(Some("acme-secret")), None);
        assert_eq!(k.authenticate(None), None);
    }

    #[test]
    fn only_hashes_are_kept() {
        let debug = format!("{:?}", keys());
        assert!(!debug.contains("secret") && !debug.contains(&hash_key("acme-secret")));
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(ApiKeys::parse("acme").is_err());
        assert!(ApiKeys::parse("acme:1234").is_err());
        assert!(ApiKeys::parse(&format!(":{}", hash_key("x"))).is_err());
        assert!(ApiKeys::parse("").unwrap().is_empty());
        let colon = ApiKeys::parse(&format!("org:acme:{}", hash_key("k"))).unwrap();
        assert_eq!(colon.tenant_of("k"), Some("org:acme"));
    }
}
