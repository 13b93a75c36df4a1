//! The on-disk format of segment files.
//!
//! A segment is `segments/<base offset, 20 digits>.log`:
//!
//! ```text
//! header   8 bytes magic "LVLOG\0\0\x01" | u64 base offset
//! record   u32 crc32c | u32 len | u64 offset | i64 appended_at_us | [16] tenant
//!          | u16 id_len | id | payload
//! ```
//!
//! All integers are little-endian. `len` counts the bytes after the `len` field; the CRC-32C
//! covers those same bytes plus `len` itself, so a torn length is caught too.
//!
//! # Formats and versions
//!
//! - Segment files: the magic's last byte is the format version, [`VERSION`] (1). A segment
//!   of another version is refused with [`crate::Error::UnsupportedFormat`] (the log never
//!   truncates or rewrites it as a torn header).
//! - Consumer offsets (`consumers/NAME.offset`): version 1 is the offset as decimal text and
//!   nothing else. A later version will start with `v<N>:`; such a file is refused with
//!   [`crate::Error::UnsupportedFormat`].
//!
//! A log written by version 1, and what this build reads of it, is committed in
//! `crates/log/tests/compat/v1/` and read by `tests/compat.rs`.

use uuid::Uuid;

use crate::Record;

/// The segment format this build writes and reads.
pub const VERSION: u8 = 1;
/// The magic: [`MAGIC_PREFIX`] then [`VERSION`].
pub const MAGIC: &[u8; 8] = b"LVLOG\0\0\x01";
/// The bytes every version's magic starts with.
pub const MAGIC_PREFIX: &[u8; 7] = b"LVLOG\0\0";
pub const HEADER_LEN: usize = 16;
/// crc + len
pub const FRAME_LEN: usize = 8;
/// offset + time + tenant + id_len
pub const FIXED_LEN: usize = 8 + 8 + 16 + 2;
/// The largest record body accepted (sanity bound when reading).
pub const MAX_BODY: usize = 16 << 20;

pub fn segment_name(base: u64) -> String {
    format!("{base:020}.log")
}

pub fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    (digits.len() == 20).then(|| digits.parse().ok())?
}

pub fn header(base: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&base.to_le_bytes());
    h
}

/// Why a segment header is not one this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderError {
    /// Not a segment header (short, or not the magic): a torn creation, or another file.
    Invalid,
    /// A segment header of another format version (0 is never written: a zeroed header is
    /// [`HeaderError::Invalid`]).
    Version(u8),
}

/// The base offset of a segment header.
pub fn parse_header(bytes: &[u8]) -> Result<u64, HeaderError> {
    if bytes.len() < HEADER_LEN || &bytes[..7] != MAGIC_PREFIX {
        return Err(HeaderError::Invalid);
    }
    match bytes[7] {
        VERSION => {}
        0 => return Err(HeaderError::Invalid),
        v => return Err(HeaderError::Version(v)),
    }
    let base = bytes[8..16].try_into().map_err(|_| HeaderError::Invalid)?;
    Ok(u64::from_le_bytes(base))
}

/// The encoded size of a record.
pub fn encoded_len(id: &str, payload: &[u8]) -> usize {
    FRAME_LEN + FIXED_LEN + id.len() + payload.len()
}

/// Appends one encoded record to `buf`.
pub fn encode(
    buf: &mut Vec<u8>,
    offset: u64,
    appended_at_us: i64,
    tenant: &Uuid,
    id: &str,
    payload: &[u8],
) {
    let start = buf.len();
    let body_len = FIXED_LEN + id.len() + payload.len();
    buf.extend_from_slice(&[0u8; 4]);
    buf.extend_from_slice(&(body_len as u32).to_le_bytes());
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&appended_at_us.to_le_bytes());
    buf.extend_from_slice(tenant.as_bytes());
    buf.extend_from_slice(&(id.len() as u16).to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
}

/// A record decoded in place.
#[derive(Debug, Clone, Copy)]
pub struct RecordRef<'a> {
    pub offset: u64,
    pub appended_at_us: i64,
    pub tenant: Uuid,
    pub id: &'a [u8],
    pub payload: &'a [u8],
    /// Encoded size, to step to the next record.
    pub size: usize,
}

impl RecordRef<'_> {
    pub fn to_owned(&self) -> Record {
        Record {
            offset: self.offset,
            appended_at_us: self.appended_at_us,
            tenant: self.tenant,
            id: String::from_utf8_lossy(self.id).into_owned(),
            payload: self.payload.to_vec(),
        }
    }
}

/// Why bytes do not hold a valid record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than the record needs: a torn write, or the end of the data.
    Short,
    /// A record is there but its bytes are wrong.
    Invalid(&'static str),
}

/// Decodes the record at the start of `buf`.
pub fn decode(buf: &[u8]) -> Result<RecordRef<'_>, DecodeError> {
    if buf.len() < FRAME_LEN {
        return Err(DecodeError::Short);
    }
    let crc = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if !(FIXED_LEN..=MAX_BODY).contains(&len) {
        return Err(DecodeError::Invalid("record length out of range"));
    }
    if buf.len() < FRAME_LEN + len {
        return Err(DecodeError::Short);
    }
    let body = &buf[FRAME_LEN..FRAME_LEN + len];
    if crc32c::crc32c(&buf[4..FRAME_LEN + len]) != crc {
        return Err(DecodeError::Invalid("checksum mismatch"));
    }
    let offset = u64::from_le_bytes(body[0..8].try_into().map_err(|_| DecodeError::Short)?);
    let appended_at_us =
        i64::from_le_bytes(body[8..16].try_into().map_err(|_| DecodeError::Short)?);
    let tenant = Uuid::from_slice(&body[16..32]).map_err(|_| DecodeError::Short)?;
    let id_len = u16::from_le_bytes([body[32], body[33]]) as usize;
    if FIXED_LEN + id_len > len {
        return Err(DecodeError::Invalid("id length out of range"));
    }
    Ok(RecordRef {
        offset,
        appended_at_us,
        tenant,
        id: &body[FIXED_LEN..FIXED_LEN + id_len],
        payload: &body[FIXED_LEN + id_len..],
        size: FRAME_LEN + len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn encode_decode_round_trip(
            offset in any::<u64>(),
            ts in any::<i64>(),
            tenant in any::<u128>(),
            id in "[a-z0-9-]{0,40}",
            payload in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let tenant = Uuid::from_u128(tenant);
            let mut buf = Vec::new();
            encode(&mut buf, offset, ts, &tenant, &id, &payload);
            prop_assert_eq!(buf.len(), encoded_len(&id, &payload));
            let r = decode(&buf).expect("valid record");
            prop_assert_eq!(r.offset, offset);
            prop_assert_eq!(r.appended_at_us, ts);
            prop_assert_eq!(r.tenant, tenant);
            prop_assert_eq!(r.id, id.as_bytes());
            prop_assert_eq!(r.payload, &payload[..]);
            prop_assert_eq!(r.size, buf.len());
            // Every strict prefix is short or invalid, never a different valid record.
            for cut in 0..buf.len() {
                prop_assert!(decode(&buf[..cut]).is_err());
            }
        }

        #[test]
        fn any_flipped_byte_is_detected(flip in 0usize..100, bit in 0u8..8) {
            let mut buf = Vec::new();
            encode(&mut buf, 7, 1, &Uuid::from_u128(3), "msg-1", &[42u8; 58]);
            let i = flip % buf.len();
            buf[i] ^= 1 << bit;
            prop_assert!(decode(&buf).is_err());
        }
    }

    #[test]
    fn segment_names_round_trip() {
        assert_eq!(parse_segment_name(&segment_name(1234)), Some(1234));
        assert_eq!(parse_segment_name("12.log"), None);
        assert_eq!(parse_header(&header(99)), Ok(99));
        assert_eq!(parse_header(&header(99)[..15]), Err(HeaderError::Invalid));
        let mut newer = header(99);
        newer[7] = 2;
        assert_eq!(parse_header(&newer), Err(HeaderError::Version(2)));
        newer[7] = 0;
        assert_eq!(parse_header(&newer), Err(HeaderError::Invalid));
    }
}
