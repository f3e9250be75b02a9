//! Checkpoints as C2SP signed notes: the `tlog-checkpoint` body (origin,
//! tree size, base64 root hash, then a timestamp line), signed with Ed25519
//! as `signed-note` specifies, and the verifier key that checks them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};

use super::merkle::Hash;

/// The signature type byte of Ed25519 in `signed-note`.
const ED25519: u8 = 0x01;
/// The extension line that dates a checkpoint.
const TIMESTAMP_PREFIX: &str = "timestamp ";

/// A checkpoint's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// `<deployment origin>/<tenant>`.
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// RFC 3339, UTC, milliseconds.
    pub timestamp: String,
}

impl Checkpoint {
    /// The note text: every line ends with a newline.
    pub fn body(&self) -> String {
        format!(
            "{}\n{}\n{}\n{TIMESTAMP_PREFIX}{}\n",
            self.origin,
            self.size,
            STANDARD.encode(self.root),
            self.timestamp
        )
    }

    /// Reads a note's text (without its signatures).
    pub fn parse_body(text: &str) -> Option<Self> {
        let mut lines = text.strip_suffix('\n')?.split('\n');
        let origin = lines.next().filter(|o| !o.is_empty())?.to_string();
        let size_text = lines.next()?;
        // Decimal without leading zeros, as the spec requires.
        if size_text.is_empty() || (size_text.len() > 1 && size_text.starts_with('0')) {
            return None;
        }
        let size = size_text.parse().ok()?;
        let root: Hash = STANDARD.decode(lines.next()?).ok()?.try_into().ok()?;
        let timestamp = lines
            .find_map(|line| line.strip_prefix(TIMESTAMP_PREFIX))?
            .to_string();
        Some(Self {
            origin,
            size,
            root,
            timestamp,
        })
    }
}

/// The checkpoint signer: an Ed25519 key with its note name.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
}

/// Why a signed note was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the note is not a signed note (text, blank line, signature lines)")]
    Malformed,
    #[error("the note has no signature by {0}")]
    NoSignature(String),
    #[error("the signature by {0} does not verify")]
    BadSignature(String),
    #[error("the note's text is not a checkpoint")]
    NotACheckpoint,
    #[error("the verifier key is not `<name>+<hex id>+<base64 key>` for Ed25519")]
    BadKey,
}

fn key_id(name: &str, public: &VerifyingKey) -> [u8; 4] {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ED25519]);
    hasher.update(public.as_bytes());
    let digest = hasher.finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

impl NoteSigner {
    /// A signer from secret text (the deployment's secret, or the
    /// development default): the Ed25519 seed is SHA-256 of it, so any
    /// secret of enough entropy makes a key.
    pub fn from_secret(name: &str, secret: &str) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(b"audit-trail checkpoint signing key\n");
        hasher.update(secret.as_bytes());
        let seed: [u8; 32] = hasher.finalize().into();
        Self {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
        }
    }

    /// The signed note of `checkpoint`.
    pub fn sign(&self, checkpoint: &Checkpoint) -> String {
        let body = checkpoint.body();
        let signature = self.key.sign(body.as_bytes());
        let mut signed = Vec::with_capacity(68);
        signed.extend_from_slice(&key_id(&self.name, &self.key.verifying_key()));
        signed.extend_from_slice(&signature.to_bytes());
        format!("{body}\n— {} {}\n", self.name, STANDARD.encode(signed))
    }
}

/// A verifier key: checks notes signed by one name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
}

impl NoteVerifier {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<hex key id>+<base64(0x01 ‖ public key)>`.
    pub fn vkey(&self) -> String {
        let id = key_id(&self.name, &self.key);
        let mut typed = vec![ED25519];
        typed.extend_from_slice(self.key.as_bytes());
        format!(
            "{}+{}+{}",
            self.name,
            id.iter().map(|b| format!("{b:02x}")).collect::<String>(),
            STANDARD.encode(typed)
        )
    }

    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        // A name has no `+`; the base64 key may.
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(NoteError::BadKey);
        };
        let bytes = STANDARD.decode(key).map_err(|_| NoteError::BadKey)?;
        let (&kind, public) = bytes.split_first().ok_or(NoteError::BadKey)?;
        let public: [u8; 32] = public.try_into().map_err(|_| NoteError::BadKey)?;
        let key = VerifyingKey::from_bytes(&public).map_err(|_| NoteError::BadKey)?;
        let verifier = Self {
            name: name.to_string(),
            key,
        };
        let expected: String = key_id(name, &key)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if kind != ED25519 || name.is_empty() || id != expected {
            return Err(NoteError::BadKey);
        }
        Ok(verifier)
    }

    /// Checks a signed note and returns its checkpoint.
    pub fn open(&self, note: &str) -> Result<Checkpoint, NoteError> {
        let split = note.rfind("\n\n").ok_or(NoteError::Malformed)?;
        let (body, signatures) = (&note[..split + 1], &note[split + 2..]);
        let id = key_id(&self.name, &self.key);
        let mut found = false;
        for line in signatures.lines() {
            let Some(rest) = line.strip_prefix("— ") else {
                return Err(NoteError::Malformed);
            };
            let Some((name, signature)) = rest.split_once(' ') else {
                return Err(NoteError::Malformed);
            };
            if name != self.name {
                continue;
            }
            let Ok(bytes) = STANDARD.decode(signature) else {
                continue;
            };
            if bytes.len() != 68 || bytes[..4] != id {
                continue;
            }
            found = true;
            let signature = Signature::from_slice(&bytes[4..]).map_err(|_| NoteError::Malformed)?;
            if self.key.verify(body.as_bytes(), &signature).is_ok() {
                return Checkpoint::parse_body(body).ok_or(NoteError::NotACheckpoint);
            }
        }
        Err(if found {
            NoteError::BadSignature(self.name.clone())
        } else {
            NoteError::NoSignature(self.name.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "audit.example.com/acme".into(),
            size: 42,
            root: [7; 32],
            timestamp: "2026-11-27T08:00:00.000Z".into(),
        }
    }

    #[test]
    fn every_verifier_key_reads_back() {
        // Base64 keys often hold `+`: the name never does.
        for i in 0..200 {
            let verifier =
                NoteSigner::from_secret("audit.example.com", &format!("s{i}")).verifier();
            assert_eq!(NoteVerifier::parse(&verifier.vkey()), Ok(verifier));
        }
    }

    #[test]
    fn a_signed_checkpoint_opens_with_its_verifier_key_only() {
        let signer = NoteSigner::from_secret("audit.example.com", "secret");
        let note = signer.sign(&checkpoint());
        assert!(note.starts_with("audit.example.com/acme\n42\nBwcH"));
        let vkey = signer.verifier().vkey();
        let verifier = NoteVerifier::parse(&vkey).unwrap();
        assert_eq!(verifier.open(&note).unwrap(), checkpoint());
        // Another key of the same name, or one changed byte, fails.
        let other = NoteSigner::from_secret("audit.example.com", "other").verifier();
        assert!(other.open(&note).is_err());
        let forged = note.replace("\n42\n", "\n43\n");
        assert_eq!(
            verifier.open(&forged),
            Err(NoteError::BadSignature("audit.example.com".into()))
        );
        assert_eq!(
            NoteVerifier::parse(&vkey.replace('+', "-")),
            Err(NoteError::BadKey)
        );
    }
}
