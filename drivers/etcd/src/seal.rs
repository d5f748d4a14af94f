//! Values at rest: every token record, keyring record and the gateway identity are
//! sealed with XChaCha20-Poly1305 under a key the replicas share, with the etcd key as
//! associated data.
//!
//! A sealed value is `0x01 || nonce (24 bytes) || ciphertext || tag (16 bytes)`. The
//! nonce is random (192 bits, so random nonces under one long-lived key are safe). The
//! associated data is `"boarding-etcd/v1\n" || etcd key`, so a value copied to another
//! key (another token id, another client id, another fleet's prefix) fails to open.

use std::fmt;
use std::fs;
use std::io::Write;
use std::path::Path;

use chacha20poly1305::aead::{AeadInOut, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

use crate::error::EtcdError;

/// The sealed-value format's version byte.
const VERSION: u8 = 1;
/// The nonce length of XChaCha20-Poly1305.
const NONCE_LEN: usize = 24;
/// The tag length of Poly1305.
const TAG_LEN: usize = 16;
/// Binds a sealed value to this format and to the etcd key it is stored under.
const AAD_LABEL: &[u8] = b"boarding-etcd/v1\n";

/// The 32-byte key that seals a fleet's values in etcd. Every replica of the fleet (and
/// every operator command that reads its tokens or keyrings) needs the same key.
/// Zeroized on drop; `Debug` shows nothing of it.
#[derive(Clone)]
pub struct SealingKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for SealingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SealingKey(redacted)")
    }
}

impl SealingKey {
    /// A key from its bytes.
    pub fn from_bytes(bytes: Zeroizing<[u8; 32]>) -> Self {
        Self(bytes)
    }

    /// A fresh random key from the operating system's generator.
    ///
    /// # Errors
    ///
    /// [`EtcdError::Config`] if the generator fails.
    pub fn generate() -> Result<Self, EtcdError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut_slice())
            .map_err(|e| EtcdError::Config { reason: format!("the OS random generator failed: {e}") })?;
        Ok(Self(bytes))
    }

    /// Reads a key file: 32 raw bytes, or 64 hexadecimal digits (surrounding whitespace
    /// is ignored, so `openssl rand -hex 32 > FILE` makes one). On Unix the file must not
    /// be readable by group or others.
    ///
    /// # Errors
    ///
    /// [`EtcdError::File`] if the file cannot be read, is open to group or others, or
    /// holds something else.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, EtcdError> {
        let path = path.as_ref();
        let fail = |reason: String| EtcdError::File { what: "sealing key", path: path.to_owned(), reason };
        boarding_smol::check_private(path, "chmod 600").map_err(|e| fail(e.to_string()))?;
        let contents = Zeroizing::new(fs::read(path).map_err(|e| fail(e.to_string()))?);
        let mut bytes = Zeroizing::new([0u8; 32]);
        if contents.len() == 32 {
            bytes.copy_from_slice(&contents);
            return Ok(Self(bytes));
        }
        let text = contents.trim_ascii();
        if text.len() == 64 && hex::decode_to_slice(text, bytes.as_mut_slice()).is_ok() {
            return Ok(Self(bytes));
        }
        Err(fail(format!(
            "it holds {} bytes; a sealing key file holds 32 raw bytes or 64 hexadecimal digits",
            contents.len()
        )))
    }

    /// Creates a key file with a fresh random key (64 hexadecimal digits and a newline,
    /// mode 0600 on Unix) and returns the key.
    ///
    /// # Errors
    ///
    /// [`EtcdError::File`] if the file exists or cannot be written.
    pub fn create_file(path: impl AsRef<Path>) -> Result<Self, EtcdError> {
        let path = path.as_ref();
        let fail = |reason: String| EtcdError::File { what: "sealing key", path: path.to_owned(), reason };
        let key = Self::generate()?;
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| fail(e.to_string()))?;
        let mut text = Zeroizing::new(hex::encode(key.0.as_slice()));
        text.push('\n');
        file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| fail(e.to_string()))?;
        Ok(key)
    }
}

/// Why a value could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpenError {
    /// Not in the sealed format (too short, or an unknown version).
    Format,
    /// The tag does not verify: another sealing key, another etcd key, or altered.
    Authentication,
}

/// Seals and opens values for one fleet.
pub(crate) struct Sealer {
    cipher: XChaCha20Poly1305,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sealer(redacted)")
    }
}

fn aad(key: &[u8]) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_LABEL.len().saturating_add(key.len()));
    aad.extend_from_slice(AAD_LABEL);
    aad.extend_from_slice(key);
    aad
}

impl Sealer {
    pub(crate) fn new(key: &SealingKey) -> Self {
        // The cipher keeps its own copy of the key and zeroizes it on drop.
        let cipher = XChaCha20Poly1305::new((&*key.0).into());
        Self { cipher }
    }

    /// Seals `plaintext` for the etcd key `key`.
    pub(crate) fn seal(&self, key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, EtcdError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce)
            .map_err(|e| EtcdError::Config { reason: format!("the OS random generator failed: {e}") })?;
        let mut buffer = Vec::with_capacity(plaintext.len().saturating_add(1 + NONCE_LEN + TAG_LEN));
        buffer.extend_from_slice(plaintext);
        self.cipher
            .encrypt_in_place(&XNonce::from(nonce), &aad(key), &mut buffer)
            .map_err(|_| EtcdError::Config { reason: "a value is too long to seal".into() })?;
        let mut sealed = Vec::with_capacity(buffer.len().saturating_add(1 + NONCE_LEN));
        sealed.push(VERSION);
        sealed.extend_from_slice(&nonce);
        sealed.extend_from_slice(&buffer);
        Ok(sealed)
    }

    /// Opens a value sealed for the etcd key `key`.
    pub(crate) fn open(&self, key: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let (version, rest) = sealed.split_first().ok_or(OpenError::Format)?;
        if *version != VERSION || rest.len() < NONCE_LEN + TAG_LEN {
            return Err(OpenError::Format);
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce = XNonce::try_from(nonce).map_err(|_| OpenError::Format)?;
        let mut buffer = Zeroizing::new(ciphertext.to_vec());
        self.cipher.decrypt_in_place(&nonce, &aad(key), &mut *buffer).map_err(|_| OpenError::Authentication)?;
        Ok(buffer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SealingKey {
        SealingKey::from_bytes(Zeroizing::new([b; 32]))
    }

    #[test]
    fn seals_and_binds_to_the_key() {
        let sealer = Sealer::new(&key(1));
        let sealed = sealer.seal(b"/p/tokens/abcdef", b"secret payload").unwrap();
        assert!(!sealed.windows(14).any(|w| w == b"secret payload"));
        assert_eq!(sealer.open(b"/p/tokens/abcdef", &sealed).unwrap().as_slice(), b"secret payload");
        assert_eq!(sealer.open(b"/p/tokens/abcdeg", &sealed), Err(OpenError::Authentication));
        assert_eq!(Sealer::new(&key(2)).open(b"/p/tokens/abcdef", &sealed), Err(OpenError::Authentication));
        let mut altered = sealed.clone();
        if let Some(last) = altered.last_mut() {
            *last ^= 1;
        }
        assert_eq!(sealer.open(b"/p/tokens/abcdef", &altered), Err(OpenError::Authentication));
        assert_eq!(sealer.open(b"/p/tokens/abcdef", &sealed[..10]), Err(OpenError::Format));
        assert_eq!(format!("{:?}", key(7)), "SealingKey(redacted)");
    }

    #[test]
    fn key_files() {
        let dir = std::env::temp_dir().join(format!("boarding-etcd-key-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("seal.key");
        let _ = fs::remove_file(&path);
        let created = SealingKey::create_file(&path).unwrap();
        let loaded = SealingKey::load(&path).unwrap();
        assert_eq!(created.0.as_slice(), loaded.0.as_slice());
        assert!(SealingKey::create_file(&path).is_err(), "an existing file is not overwritten");
        let raw = dir.join("raw.key");
        let _ = fs::remove_file(&raw);
        fs::write(&raw, [9u8; 32]).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&raw, fs::Permissions::from_mode(0o644)).unwrap();
            let open = SealingKey::load(&raw).unwrap_err().to_string();
            assert!(open.contains("chmod 600"), "{open}");
            fs::set_permissions(&raw, fs::Permissions::from_mode(0o600)).unwrap();
        }
        assert_eq!(SealingKey::load(&raw).unwrap().0.as_slice(), &[9u8; 32]);
        fs::write(&raw, b"too short").unwrap();
        assert!(SealingKey::load(&raw).unwrap_err().to_string().contains("32 raw bytes"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
