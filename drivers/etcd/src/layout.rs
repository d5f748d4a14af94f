//! Where a fleet's records live in etcd: every key starts with the fleet's prefix.
//!
//! | key | value |
//! |---|---|
//! | `P/tokens/<token id>` | the sealed token record (with the token's lease if it expires) |
//! | `P/keyrings/<client id>` | the sealed keyring record |
//! | `P/uses/<token id>/<client id>/<nonce>` | empty: one charged redemption of an unlimited token (the token's lease) |
//! | `P/identity` | the sealed seed of the gateway identity the replicas share |
//! | `P/sealing-check` | a sealed constant: proves a replica holds the fleet's sealing key |

use boarding::identity::ClientId;
use boarding::token::TokenId;

use crate::error::EtcdError;

/// The default prefix: one fleet named `default`.
pub const DEFAULT_PREFIX: &str = "/boarding/default/";

/// A fleet's key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    prefix: String,
}

impl Layout {
    /// Checks and normalises a prefix (it ends with `/`).
    pub(crate) fn new(prefix: &str) -> Result<Self, EtcdError> {
        let config = |reason: &str| EtcdError::Config { reason: format!("the key prefix {prefix:?} {reason}") };
        if prefix.is_empty() || prefix == "/" {
            return Err(config("is empty: give each fleet a prefix of its own, for example /boarding/fleet-a/"));
        }
        if prefix.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(config("contains whitespace or control characters"));
        }
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        Ok(Self { prefix })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    pub(crate) fn tokens(&self) -> String {
        format!("{}tokens/", self.prefix)
    }

    pub(crate) fn token(&self, id: TokenId) -> String {
        format!("{}tokens/{id}", self.prefix)
    }

    pub(crate) fn keyrings(&self) -> String {
        format!("{}keyrings/", self.prefix)
    }

    pub(crate) fn keyring(&self, id: &ClientId) -> String {
        format!("{}keyrings/{id}", self.prefix)
    }

    /// The prefix of an unlimited token's per-redemption keys.
    pub(crate) fn uses(&self, id: TokenId) -> String {
        format!("{}uses/{id}/", self.prefix)
    }

    /// One charged redemption of an unlimited token.
    pub(crate) fn use_key(&self, id: TokenId, client: &ClientId, nonce: &str) -> String {
        format!("{}uses/{id}/{client}/{nonce}", self.prefix)
    }

    pub(crate) fn identity(&self) -> String {
        format!("{}identity", self.prefix)
    }

    pub(crate) fn sealing_check(&self) -> String {
        format!("{}sealing-check", self.prefix)
    }

    /// What a deleted key was, for revocation watches.
    pub(crate) fn classify(&self, key: &[u8]) -> Option<Record> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        if let Some(id) = rest.strip_prefix(b"keyrings/") {
            return ClientId::from_bytes(id).ok().map(Record::Keyring);
        }
        if let Some(id) = rest.strip_prefix(b"tokens/") {
            return TokenId::from_bytes(id).ok().map(Record::Token);
        }
        None
    }
}

/// A record a key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Record {
    Token(TokenId),
    Keyring(ClientId),
}

/// The end of the range of keys that start with `prefix` (etcd's `range_end`).
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last.saturating_add(1));
            return end;
        }
    }
    // Every byte is 0xff: the range runs to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let layout = Layout::new("/boarding/a").unwrap();
        assert_eq!(layout.prefix(), "/boarding/a/");
        assert_eq!(layout.token("abcdef".parse().unwrap()), "/boarding/a/tokens/abcdef");
        assert_eq!(layout.keyring(&ClientId::new("n-1").unwrap()), "/boarding/a/keyrings/n-1");
        assert!(Layout::new("").is_err() && Layout::new("/").is_err() && Layout::new("/a b/").is_err());
        assert_eq!(prefix_end(b"/p/tokens/"), b"/p/tokens0");
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b");
        assert_eq!(layout.classify(b"/boarding/a/keyrings/n-1"), Some(Record::Keyring(ClientId::new("n-1").unwrap())));
        assert_eq!(layout.classify(b"/boarding/a/tokens/abcdef"), Some(Record::Token("abcdef".parse().unwrap())));
        assert_eq!(layout.classify(b"/boarding/a/uses/abcdef/n-1/00"), None);
        assert_eq!(layout.classify(b"/boarding/b/keyrings/n-1"), None);
    }
}
