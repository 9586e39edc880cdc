//! LEB128 varints, zigzag-encoded for signed values. Public so other compact
//! encodings in Ferry (the queue journal) share one implementation.

use crate::RecordError;

/// Longest encoding of a u64.
const MAX_VARINT_LEN: usize = 10;

/// Appends `value` as a varint.
pub fn put_u64(buf: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        buf.push((value as u8) | 0x80);
        value >>= 7;
    }
    buf.push(value as u8);
}

/// Appends `value` zigzag-encoded.
pub fn put_i64(buf: &mut Vec<u8>, value: i64) {
    put_u64(buf, ((value << 1) ^ (value >> 63)) as u64);
}

/// Encoded length of `value`.
pub fn len_u64(mut value: u64) -> usize {
    let mut len = 1;
    while value >= 0x80 {
        value >>= 7;
        len += 1;
    }
    len
}

/// Encoded length of `value` zigzag-encoded.
pub fn len_i64(value: i64) -> usize {
    len_u64(((value << 1) ^ (value >> 63)) as u64)
}

/// Reads a varint from the front of `buf`, advancing it.
pub fn get_u64(buf: &mut &[u8]) -> Result<u64, RecordError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(RecordError::Malformed("bad varint"))
}

/// Reads a zigzag varint from the front of `buf`, advancing it.
pub fn get_i64(buf: &mut &[u8]) -> Result<i64, RecordError> {
    let raw = get_u64(buf)?;
    Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn u64_round_trips(value: u64) {
            let mut buf = Vec::new();
            put_u64(&mut buf, value);
            prop_assert_eq!(buf.len(), len_u64(value));
            let mut slice = buf.as_slice();
            prop_assert_eq!(get_u64(&mut slice)?, value);
            prop_assert!(slice.is_empty());
        }

        #[test]
        fn i64_round_trips(value: i64) {
            let mut buf = Vec::new();
            put_i64(&mut buf, value);
            prop_assert_eq!(buf.len(), len_i64(value));
            let mut slice = buf.as_slice();
            prop_assert_eq!(get_i64(&mut slice)?, value);
        }
    }

    #[test]
    fn unterminated_varint_is_an_error() {
        let mut slice: &[u8] = &[0x80, 0x80];
        assert!(get_u64(&mut slice).is_err());
    }
}
