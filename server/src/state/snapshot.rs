//! The byte format of a [`State`] snapshot.
//!
//! ```text
//! "RSTS" | format version (1 byte) | postcard(State) | CRC-32 (4 bytes, LE)
//! ```
//!
//! The checksum covers everything before it. A snapshot travels between
//! nodes and sits on disk; without the magic, version and checksum, a
//! truncated file, a flipped bit or a snapshot of something else could decode
//! into a plausible but wrong state, and that replica would silently diverge.
//! Decoding therefore checks, in order: magic, version, checksum, that the
//! payload decodes and is followed by nothing, and finally the state's own
//! invariants. Each failure is a distinct [`SnapshotError`].
//!
//! Changing the serialized form of any type inside `State` (including the
//! `command` types kept in sessions) requires a new format version.

use super::State;

/// First bytes of every state snapshot ("Roster STate Snapshot").
pub const SNAPSHOT_MAGIC: [u8; 4] = *b"RSTS";
/// Version of the layout after the magic; bump it on any change.
///
/// 2: leases, topology, elections and the watch history; the revision moved
/// from the KV store to the state.
pub const SNAPSHOT_FORMAT_VERSION: u8 = 2;

const HEADER_LEN: usize = SNAPSHOT_MAGIC.len() + 1;
const CHECKSUM_LEN: usize = 4;

/// Why bytes could not be restored as a [`State`].
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("not a Roster state snapshot: it starts with {found:02x?}, not {SNAPSHOT_MAGIC:02x?} (\"RSTS\")")]
    BadMagic { found: [u8; 4] },
    #[error("state snapshot is truncated: {len} bytes, less than the {min} of header and checksum")]
    Truncated { len: usize, min: usize },
    #[error(
        "state snapshot format version {found} is not supported; this build reads version {SNAPSHOT_FORMAT_VERSION}"
    )]
    UnsupportedVersion { found: u8 },
    #[error("state snapshot is corrupt: checksum {computed:#010x} does not match the stored {stored:#010x}")]
    ChecksumMismatch { stored: u32, computed: u32 },
    #[error("state snapshot payload does not decode: {0}")]
    Decode(#[source] postcard::Error),
    #[error("state snapshot has {0} unexpected bytes after its payload")]
    TrailingBytes(usize),
    #[error("state snapshot decodes but is inconsistent: {0}")]
    Inconsistent(String),
}

pub(super) fn encode(state: &State) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(&SNAPSHOT_MAGIC);
    out.push(SNAPSHOT_FORMAT_VERSION);
    // postcard fails only for serde features this state does not use
    // (sequences of unknown length, unsupported primitive types); every type
    // in State is plain data, so this cannot fail for any state value.
    let mut out =
        postcard::to_extend(state, out).expect("State serializes with postcard: it holds only maps, vecs and integers");
    let checksum = crc32(&out);
    out.extend_from_slice(&checksum.to_le_bytes());
    out
}

pub(super) fn decode(bytes: &[u8]) -> Result<State, SnapshotError> {
    if let Some(found) = bytes.first_chunk::<4>() {
        if *found != SNAPSHOT_MAGIC {
            return Err(SnapshotError::BadMagic { found: *found });
        }
    }
    let min = HEADER_LEN + CHECKSUM_LEN;
    let truncated = SnapshotError::Truncated { len: bytes.len(), min };
    if bytes.len() < min {
        return Err(truncated);
    }
    let (Some(&version), Some((body, stored))) = (bytes.get(4), bytes.split_last_chunk::<4>()) else {
        return Err(truncated);
    };
    if version != SNAPSHOT_FORMAT_VERSION {
        return Err(SnapshotError::UnsupportedVersion { found: version });
    }
    let stored = u32::from_le_bytes(*stored);
    let computed = crc32(body);
    if stored != computed {
        return Err(SnapshotError::ChecksumMismatch { stored, computed });
    }
    let payload = body.get(HEADER_LEN..).unwrap_or_default();
    let (state, rest) = postcard::take_from_bytes::<State>(payload).map_err(SnapshotError::Decode)?;
    if !rest.is_empty() {
        return Err(SnapshotError::TrailingBytes(rest.len()));
    }
    state.check_invariants().map_err(SnapshotError::Inconsistent)?;
    Ok(state)
}

/// CRC-32 (IEEE 802.3, the zlib/PNG one): catches every burst error up to 32
/// bits and all but 2^-32 of the rest, which is what a storage or transfer
/// error looks like. Not a defence against deliberate tampering.
fn crc32(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc = CRC32_TABLE[((crc ^ u32::from(b)) & 0xff) as usize] ^ (crc >> 8);
    }
    !crc
}

const CRC32_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut bit = 0;
        while bit < 8 {
            c = if c & 1 != 0 { 0xedb8_8320 ^ (c >> 1) } else { c >> 1 };
            bit += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_known_answer() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(crc32(b""), 0);
    }

    #[test]
    fn empty_state_layout() {
        let bytes = encode(&State::default());
        assert_eq!(&bytes[..4], b"RSTS");
        assert_eq!(bytes[4], SNAPSHOT_FORMAT_VERSION);
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        assert_eq!(crc, crc32(body).to_le_bytes());
        match decode(&bytes) {
            Ok(state) => assert_eq!(state, State::default()),
            Err(e) => panic!("{e}"),
        }
    }

    /// Wraps an arbitrary payload in a valid header and checksum.
    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.push(SNAPSHOT_FORMAT_VERSION);
        out.extend_from_slice(payload);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn short_inputs() {
        assert!(matches!(decode(b""), Err(SnapshotError::Truncated { len: 0, min: 9 })));
        assert!(matches!(decode(b"RS"), Err(SnapshotError::Truncated { len: 2, .. })));
        assert!(matches!(
            decode(b"RSTS\x01"),
            Err(SnapshotError::Truncated { len: 5, .. })
        ));
        assert!(matches!(
            decode(b"RSTS\x01abc"),
            Err(SnapshotError::Truncated { len: 8, .. })
        ));
        assert!(matches!(decode(b"xx"), Err(SnapshotError::Truncated { .. })));
    }

    #[test]
    fn foreign_and_future_snapshots() {
        let e = decode(b"{\"json\": true}").err();
        assert!(matches!(e, Some(SnapshotError::BadMagic { found }) if &found == b"{\"js"));
        let mut future = encode(&State::default());
        future[4] = SNAPSHOT_FORMAT_VERSION + 1;
        assert!(matches!(
            decode(&future),
            Err(SnapshotError::UnsupportedVersion { found }) if found == SNAPSHOT_FORMAT_VERSION + 1
        ));
        // Version 1 (before leases and elections) is refused, not misread.
        let mut old = encode(&State::default());
        old[4] = 1;
        assert!(matches!(
            decode(&old),
            Err(SnapshotError::UnsupportedVersion { found: 1 })
        ));
    }

    #[test]
    fn checksummed_garbage() {
        // The checksum is right but the payload is not a State.
        let e = decode(&framed(&[0xff; 40])).err();
        assert!(matches!(e, Some(SnapshotError::Decode(_))), "{e:?}");
        // A valid state followed by extra bytes.
        let mut payload = match postcard::to_stdvec(&State::default()) {
            Ok(p) => p,
            Err(e) => panic!("{e}"),
        };
        payload.extend_from_slice(b"extra");
        assert!(matches!(
            decode(&framed(&payload)),
            Err(SnapshotError::TrailingBytes(5))
        ));
    }

    #[test]
    fn error_messages_are_clear() {
        let e = SnapshotError::UnsupportedVersion { found: 9 };
        assert_eq!(
            e.to_string(),
            "state snapshot format version 9 is not supported; this build reads version 2"
        );
        let e = SnapshotError::ChecksumMismatch { stored: 1, computed: 2 };
        assert_eq!(
            e.to_string(),
            "state snapshot is corrupt: checksum 0x00000002 does not match the stored 0x00000001"
        );
    }
}
