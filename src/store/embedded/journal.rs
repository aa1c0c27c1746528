//! The outcome journal: the outcomes of keyed calls ([`super::Store::idem_finish`]),
//! appended with one `write(2)` each batch before their callers hear back, and folded
//! into the state file by its next synced commit.
//!
//! A keyed call's claim is synced before its request leaves; its outcome need not cost a
//! second sync. The writer commits the outcome without a sync (visible at once), appends
//! it here, and only then answers. A process killed after that (kill -9, a panic, the
//! OOM killer) leaves the journal in the kernel's page cache, so the outcome is on the
//! file's way to the disk and the next open folds it in ([`Journal::open`]). Only a
//! power loss (or an OS crash) before the next sync can lose it, and then the key keeps
//! its synced claim: the claim lapses and the key is held as "outcome unknown", never
//! sent again.
//!
//! `[u32 length][8 bytes of SHA-256 of the payload][payload]` per entry, the payload
//! being `[u32 key length][key][u64 expiry, Unix ms][result]`, all little-endian. A read
//! stops at the first entry that is torn or fails its digest. This module owns the file
//! (`<state file>.outcomes`); it must not touch the state file itself.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

/// One journaled outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entry {
    /// The idempotency record's key.
    pub(super) key: String,
    /// When the record expires, Unix ms.
    pub(super) expires_ms: u64,
    /// The stored result.
    pub(super) result: Vec<u8>,
}

/// The journal file, open for appending.
#[derive(Debug)]
pub(super) struct Journal {
    file: File,
    /// Bytes in the file: zero when every outcome in it is in a synced commit.
    len: u64,
}

/// The journal beside a state file.
pub(super) fn path_for(state: &Path) -> PathBuf {
    let mut s = state.as_os_str().to_owned();
    s.push(".outcomes");
    PathBuf::from(s)
}

const DIGEST: usize = 8;

fn digest(payload: &[u8]) -> [u8; DIGEST] {
    let full = Sha256::digest(payload);
    let mut out = [0; DIGEST];
    out.copy_from_slice(full.get(..DIGEST).unwrap_or_default());
    out
}

impl Journal {
    /// Opens (creating) the journal and reads the entries it holds, in order.
    pub(super) fn open(path: &Path) -> io::Result<(Self, Vec<Entry>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let entries = decode_all(&bytes);
        let len = bytes.len() as u64;
        Ok((Self { file, len }, entries))
    }

    /// Appends `entries` with one write: in the kernel's hands when this returns.
    pub(super) fn append(&mut self, entries: &[Entry]) -> io::Result<()> {
        let mut out = Vec::new();
        for e in entries {
            encode(e, &mut out);
        }
        if let Err(e) = self.file.write_all(&out) {
            // A torn entry would hide every later one from the next open: cut it off.
            let _ = self.file.set_len(self.len);
            return Err(e);
        }
        self.len += out.len() as u64;
        Ok(())
    }

    /// Empties the journal: call only after a synced commit holds everything in it.
    pub(super) fn clear(&mut self) -> io::Result<()> {
        if self.len > 0 {
            self.file.set_len(0)?;
            self.len = 0;
        }
        Ok(())
    }
}

fn encode(e: &Entry, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(4 + e.key.len() + 8 + e.result.len());
    payload.extend_from_slice(&(e.key.len() as u32).to_le_bytes());
    payload.extend_from_slice(e.key.as_bytes());
    payload.extend_from_slice(&e.expires_ms.to_le_bytes());
    payload.extend_from_slice(&e.result);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&digest(&payload));
    out.extend_from_slice(&payload);
}

/// Every whole, intact entry up to the first one that is not.
fn decode_all(mut bytes: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    while let Some((entry, rest)) = decode_one(bytes) {
        out.push(entry);
        bytes = rest;
    }
    out
}

fn decode_one(bytes: &[u8]) -> Option<(Entry, &[u8])> {
    let (len, rest) = bytes.split_first_chunk::<4>()?;
    let (sum, rest) = rest.split_first_chunk::<DIGEST>()?;
    let len = usize::try_from(u32::from_le_bytes(*len)).ok()?;
    let (payload, rest) = rest.split_at_checked(len)?;
    if digest(payload) != *sum {
        return None;
    }
    let (key_len, p) = payload.split_first_chunk::<4>()?;
    let (key, p) = p.split_at_checked(usize::try_from(u32::from_le_bytes(*key_len)).ok()?)?;
    let (expires, result) = p.split_first_chunk::<8>()?;
    let entry = Entry {
        key: String::from_utf8(key.to_vec()).ok()?,
        expires_ms: u64::from_le_bytes(*expires),
        result: result.to_vec(),
    };
    Some((entry, rest))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn entry(key: &str, result: &[u8]) -> Entry {
        Entry {
            key: key.to_owned(),
            expires_ms: 42,
            result: result.to_vec(),
        }
    }

    #[test]
    fn entries_appended_are_read_back_in_order_until_a_torn_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("state.redb"));
        let (mut j, found) = Journal::open(&path).unwrap();
        assert!(found.is_empty());
        j.append(&[entry("idem:a", b"one"), entry("idem:b", b"")])
            .unwrap();
        j.append(&[entry("idem:c", b"three")]).unwrap();
        drop(j);
        // A torn tail (a power loss mid-write) and a flipped byte are where reading stops.
        let mut bytes = std::fs::read(&path).unwrap();
        let whole = bytes.len();
        bytes.extend_from_slice(&[9, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        let (mut j, found) = Journal::open(&path).unwrap();
        let keys: Vec<_> = found.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, ["idem:a", "idem:b", "idem:c"]);
        assert_eq!(found[2], entry("idem:c", b"three"));
        if let Some(b) = bytes.get_mut(whole - 1) {
            *b ^= 1;
        }
        std::fs::write(&path, &bytes).unwrap();
        let (_, found) = Journal::open(&path).unwrap();
        assert_eq!(
            found.len(),
            2,
            "the damaged entry and all after it are dropped"
        );
        j.clear().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
    }
}
