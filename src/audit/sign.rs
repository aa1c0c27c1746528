//! Signing records and checking signatures: the HMAC-SHA256 and Ed25519 schemes, their
//! keys (from hex, and a fresh Ed25519 pair), and the signed form of one line.
//!
//! Owns what a `sig` is (bare hex for HMAC, `ed25519:` + hex for Ed25519) and which key
//! checks which. It must not write or read the log, nor judge the chain (`seq`, `prev`):
//! that is the writer's and `verify`'s. A key never reaches a message, a log or `Debug`.

use std::time::{SystemTime, UNIX_EPOCH};

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::Value;
use sha2::Sha256;

use super::SIG_FIELD;

type HmacSha256 = Hmac<Sha256>;

/// The prefix of an Ed25519 `sig`; HMAC signatures are bare hex.
const ED25519_PREFIX: &str = "ed25519:";

/// An Ed25519 key that cannot be read, or cannot be made. The message never repeats the
/// key.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The private key is not 64 hex digits.
    #[error("an Ed25519 private key is 64 hex digits (run 'mcpd audit keygen')")]
    PrivateNotHex,
    /// The public key is not 64 hex digits.
    #[error("an Ed25519 public key is 64 hex digits")]
    PublicNotHex,
    /// The public key is 64 hex digits but no Ed25519 key.
    #[error("the public key is not a valid Ed25519 key")]
    PublicInvalid,
    /// The operating system had no randomness to give for a new key.
    #[error("no randomness for a key: {0}")]
    NoRandomness(getrandom::Error),
}

/// Why a record's signature does not check out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The HMAC does not match: the record changed, or the key is another.
    #[error("signature does not match: the record was altered (or the key is wrong)")]
    HmacMismatch,
    /// An Ed25519 signature met an HMAC key.
    #[error("the record is signed with Ed25519: verify it with --public-key")]
    SignedWithEd25519,
    /// An HMAC signature met an Ed25519 public key.
    #[error("the record is signed with HMAC: verify it with the HMAC key, not --public-key")]
    SignedWithHmac,
    /// The `ed25519:` signature is not hex of a signature's length.
    #[error("the Ed25519 signature is malformed: the record was altered")]
    Malformed,
    /// The Ed25519 signature does not match: the record changed, or the key is another.
    #[error("signature does not match: the record was altered (or the public key is wrong)")]
    Ed25519Mismatch,
}

/// How records are signed.
pub enum Signer {
    /// HMAC-SHA256 with a shared secret key.
    Hmac(Vec<u8>),
    /// Ed25519 with a private key; verification needs only the public key.
    Ed25519(Box<SigningKey>),
}

impl std::fmt::Debug for Signer {
    // Never the key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Hmac(_) => "Signer::Hmac",
            Self::Ed25519(_) => "Signer::Ed25519",
        })
    }
}

impl From<Vec<u8>> for Signer {
    fn from(key: Vec<u8>) -> Self {
        Self::Hmac(key)
    }
}

impl Signer {
    /// An Ed25519 signer from a private key written as 64 hex digits (a 32-byte seed,
    /// as `mcpd audit keygen` prints it).
    ///
    /// # Errors
    /// When the text is not 64 hex digits (the message never repeats it).
    pub fn ed25519_from_hex(private: &str) -> Result<Self, KeyError> {
        let seed: [u8; 32] = hex32(private).ok_or(KeyError::PrivateNotHex)?;
        Ok(Self::Ed25519(Box::new(SigningKey::from_bytes(&seed))))
    }

    fn sign(&self, data: &[u8]) -> String {
        match self {
            Self::Hmac(key) => hex::encode(hmac(key, data)),
            Self::Ed25519(key) => {
                format!("{ED25519_PREFIX}{}", hex::encode(key.sign(data).to_bytes()))
            }
        }
    }
}

/// How signatures are checked.
#[derive(Debug, Clone)]
pub enum Verifier {
    /// HMAC-SHA256 with the shared key the log was written with.
    Hmac(Vec<u8>),
    /// Ed25519 with the public key of the private key the log was written with.
    Ed25519(VerifyingKey),
}

impl From<&[u8]> for Verifier {
    fn from(key: &[u8]) -> Self {
        Self::Hmac(key.to_vec())
    }
}

impl<const N: usize> From<&[u8; N]> for Verifier {
    fn from(key: &[u8; N]) -> Self {
        Self::Hmac(key.to_vec())
    }
}

impl Verifier {
    /// An Ed25519 verifier from a public key written as 64 hex digits.
    ///
    /// # Errors
    /// When the text is not 64 hex digits or not a valid Ed25519 public key.
    pub fn ed25519_from_hex(public: &str) -> Result<Self, KeyError> {
        let bytes = hex32(public).ok_or(KeyError::PublicNotHex)?;
        VerifyingKey::from_bytes(&bytes)
            .map(Self::Ed25519)
            .map_err(|_| KeyError::PublicInvalid)
    }

    /// Whether `sig` signs `data` under this key.
    pub(super) fn check(&self, data: &[u8], sig: &str) -> Result<(), SignatureError> {
        match (self, sig.strip_prefix(ED25519_PREFIX)) {
            (Self::Hmac(key), None) if hex::encode(hmac(key, data)) == sig => Ok(()),
            (Self::Hmac(_), None) => Err(SignatureError::HmacMismatch),
            (Self::Hmac(_), Some(_)) => Err(SignatureError::SignedWithEd25519),
            (Self::Ed25519(_), None) => Err(SignatureError::SignedWithHmac),
            (Self::Ed25519(key), Some(sig)) => {
                let sig = hex::decode(sig)
                    .ok()
                    .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok())
                    .ok_or(SignatureError::Malformed)?;
                key.verify_strict(data, &sig)
                    .map_err(|_| SignatureError::Ed25519Mismatch)
            }
        }
    }
}

/// A new Ed25519 key pair, `(private, public)`, each as 64 hex digits.
///
/// # Errors
/// When the operating system has no randomness to give.
pub fn ed25519_keygen() -> Result<(String, String), KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(KeyError::NoRandomness)?;
    let key = SigningKey::from_bytes(&seed);
    Ok((
        hex::encode(key.to_bytes()),
        hex::encode(key.verifying_key().to_bytes()),
    ))
}

fn hex32(text: &str) -> Option<[u8; 32]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

/// The signed line for record `seq` after a line hashing to `prev`.
pub(super) fn sign_line<T: serde::Serialize>(
    signer: &Signer,
    seq: u64,
    prev: &str,
    e: &T,
) -> String {
    let now = SystemTime::now();
    let ms = now
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    let head = serde_json::json!({
        "seq": seq,
        "prev": prev,
        "time": humantime::format_rfc3339_millis(now).to_string(),
        "time_ms": u64::try_from(ms).unwrap_or(u64::MAX),
    });
    let body = serde_json::to_value(e).unwrap_or(Value::Null);
    let mut obj = serde_json::Map::new();
    for v in [head, body] {
        if let Value::Object(m) = v {
            obj.extend(m);
        }
    }
    let signed = Value::Object(obj).to_string();
    let sig = signer.sign(signed.as_bytes());
    let open = signed.strip_suffix('}').unwrap_or(&signed);
    format!("{open}{SIG_FIELD}{sig}\"}}")
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <HmacSha256 as KeyInit>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}
