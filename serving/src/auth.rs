//! API keys: each belongs to one tenant and carries scopes. The key decides
//! the tenant, so no request can name another tenant's data.
//!
//! Keys are kept as SHA-256 digests and a presented key is compared with
//! every configured digest in constant time (no early exit, no map lookup
//! keyed by the secret), so timing says nothing about how close a guess
//! was. Keys never reach logs or metrics: their configured names do.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::TenantConfig;
use crate::error::ApiError;

pub use weft_config::Scope;

/// A scope's bit in [`Principal`]'s set.
fn bit(scope: Scope) -> u8 {
    match scope {
        Scope::ProfileRead => 1,
        Scope::RecommendationsRead => 2,
        Scope::Admin => 4,
        Scope::EventsWrite => 8,
    }
}

/// The caller a key identifies.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: Arc<str>,
    /// The key's configured name (safe to log).
    pub key_name: Arc<str>,
    scopes: u8,
    pub publishable: bool,
    /// The tenant's allowed browser origins.
    pub origins: Arc<[String]>,
}

impl Principal {
    /// `Ok` when the key has `scope` (admin implies every read scope;
    /// publishable keys never read profiles).
    pub fn require(&self, scope: Scope) -> Result<(), ApiError> {
        let admin = self.scopes & bit(Scope::Admin) != 0 && !self.publishable;
        if self.scopes & bit(scope) != 0 || admin {
            Ok(())
        } else {
            Err(ApiError::PermissionDenied(format!(
                "key {:?} lacks the {} scope",
                &*self.key_name,
                scope.as_str()
            )))
        }
    }

    pub fn allows_origin(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o == origin)
    }
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    principal: Principal,
}

/// The configured keys of every tenant.
#[derive(Debug, Default)]
pub struct Keys {
    entries: Vec<Entry>,
    /// Every tenant's origins, for CORS preflights (which carry no key).
    all_origins: Vec<String>,
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

impl Keys {
    /// Builds the key table (the config was validated).
    pub fn new(tenants: &[TenantConfig]) -> Result<Keys, String> {
        let mut keys = Keys::default();
        for t in tenants {
            let tenant: Arc<str> = t.name.as_str().into();
            let origins: Arc<[String]> = t.allowed_origins.clone().into();
            keys.all_origins.extend(t.allowed_origins.iter().cloned());
            for k in &t.keys {
                let scopes = k
                    .scopes
                    .iter()
                    .filter_map(|s| Scope::parse(s))
                    .fold(0, |acc, s| acc | bit(s));
                keys.entries.push(Entry {
                    digest: digest(k.secret()?.expose().as_bytes()),
                    principal: Principal {
                        tenant: tenant.clone(),
                        key_name: k.name.as_str().into(),
                        scopes,
                        publishable: k.publishable,
                        origins: origins.clone(),
                    },
                });
            }
        }
        Ok(keys)
    }

    /// The principal of an `authorization` value (`Bearer <key>` or the bare
    /// key). Every configured key is compared, in constant time.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<Principal, ApiError> {
        let value = authorization
            .map(str::trim)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| {
                ApiError::Unauthenticated("missing API key (authorization: Bearer <key>)".into())
            })?;
        let secret = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or(value)
            .trim();
        let presented = digest(secret.as_bytes());
        let mut found: Option<&Principal> = None;
        for e in &self.entries {
            let equal: bool = e.digest.ct_eq(&presented).into();
            if equal {
                found = Some(&e.principal);
            }
        }
        found
            .cloned()
            .ok_or_else(|| ApiError::Unauthenticated("unknown API key".into()))
    }

    /// Whether any tenant allows `origin` (CORS preflight).
    pub fn any_allows_origin(&self, origin: &str) -> bool {
        self.all_origins.iter().any(|o| o == origin)
    }
}
