//! Small files written whole: sealed with a magic and a checksum, replaced
//! atomically (write aside, fsync, rename, fsync the directory).
//!
//! The identity record and the snapshot are such files. A reader sees the
//! old file or the new one, never a mix; a damaged file fails the checksum
//! and is reported as corruption instead of being half-read.

use std::fs::File;
use std::io::{self, Write as _};
use std::path::Path;

use super::wal::sync_dir;

/// magic (8) + payload length (8) + crc32 of the payload (4).
const SEAL_BYTES: usize = 20;

/// `payload` behind a header naming what it is and its checksum.
pub fn seal(magic: &[u8; 8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(SEAL_BYTES + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// The payload of a sealed file, or why it is not one.
pub fn unseal<'a>(magic: &[u8; 8], bytes: &'a [u8]) -> Result<&'a [u8], String> {
    if bytes.len() < SEAL_BYTES || &bytes[..8] != magic {
        return Err(format!(
            "not a {} file",
            String::from_utf8_lossy(magic).trim_end_matches('\0')
        ));
    }
    let len = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
    let crc = u32::from_le_bytes(bytes[16..20].try_into().unwrap_or_default());
    let payload = &bytes[SEAL_BYTES..];
    if payload.len() as u64 != len {
        return Err(format!("{} bytes where {len} were written", payload.len()));
    }
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".into());
    }
    Ok(payload)
}

/// Replaces `dir/name` with `bytes`, durably: after a crash the file is the
/// old one or the new one.
pub fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
    let tmp = dir.join(format!("{name}.tmp"));
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&tmp, dir.join(name))?;
    sync_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trips_and_detects_damage() {
        let magic = b"TESTFILE";
        let sealed = seal(magic, b"hello");
        assert_eq!(unseal(magic, &sealed).unwrap(), b"hello");
        assert!(unseal(b"OTHERMAG", &sealed).is_err());
        for i in 0..sealed.len() {
            let mut bad = sealed.clone();
            bad[i] ^= 0x40;
            assert!(unseal(magic, &bad).is_err(), "flipped byte {i} went unnoticed");
        }
        assert!(unseal(magic, &sealed[..sealed.len() - 1]).is_err());
        assert!(unseal(magic, &[]).is_err());
    }
}
