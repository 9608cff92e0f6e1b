//! Just enough protobuf for the two WebRTC messages: unsigned varints, varint length-prefixed
//! frames, and messages of varint and length-delimited fields (unknown fields skipped, as
//! protobuf requires). Every read is bounded; nothing here allocates more than its limit.

/// Why bytes could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PbError {
    /// The input ended inside a value.
    #[error("truncated")]
    Truncated,
    /// A varint is longer than 10 bytes or overflows 64 bits.
    #[error("varint too long")]
    VarintOverflow,
    /// A frame or field is larger than allowed.
    #[error("{len} bytes is over the {max}-byte limit")]
    TooLarge {
        /// Its length.
        len: u64,
        /// The limit.
        max: usize,
    },
    /// A wire type protobuf does not have (or that these messages cannot carry).
    #[error("unsupported wire type {0}")]
    WireType(u8),
}

/// Appends `value` as an unsigned varint.
pub fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Reads an unsigned varint at the start of `input`: `Ok(None)` when more bytes are needed.
pub fn get_varint(input: &[u8]) -> Result<Option<(u64, usize)>, PbError> {
    let mut value: u64 = 0;
    for (i, byte) in input.iter().enumerate() {
        if i >= 10 {
            return Err(PbError::VarintOverflow);
        }
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return Err(PbError::VarintOverflow);
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((value, i + 1)));
        }
    }
    if input.len() >= 10 {
        return Err(PbError::VarintOverflow);
    }
    Ok(None)
}

/// `body` with its varint length prefix.
pub fn length_prefixed(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 3);
    put_varint(&mut out, body.len() as u64);
    out.extend_from_slice(body);
    out
}

/// Splits the first length-prefixed frame off `input`: `Ok(None)` until it is complete;
/// `Ok(Some((body, consumed)))` once it is. Frames over `max` bytes are refused as soon as
/// their prefix is read.
pub fn split_frame(input: &[u8], max: usize) -> Result<Option<(&[u8], usize)>, PbError> {
    let Some((len, prefix)) = get_varint(input)? else {
        return Ok(None);
    };
    if len > max as u64 {
        return Err(PbError::TooLarge { len, max });
    }
    let len = len as usize;
    if input.len() < prefix + len {
        return Ok(None);
    }
    Ok(Some((&input[prefix..prefix + len], prefix + len)))
}

/// Collects length-prefixed frames from bytes that arrive in arbitrary pieces, holding at most
/// one unfinished frame.
#[derive(Debug, Default)]
pub struct FrameBuffer {
    buffer: Vec<u8>,
}

impl FrameBuffer {
    /// Adds `bytes`; returns the bodies of the frames they complete, each passed through
    /// `decode`. Frames over `max` bytes are refused.
    pub fn push<T, E: From<PbError>>(
        &mut self,
        bytes: &[u8],
        max: usize,
        mut decode: impl FnMut(&[u8]) -> Result<T, E>,
    ) -> Result<Vec<T>, E> {
        self.buffer.extend_from_slice(bytes);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some((body, used)) = split_frame(&self.buffer[start..], max)? {
            out.push(decode(body)?);
            start += used;
        }
        self.buffer.drain(..start);
        Ok(out)
    }
}

/// Appends field `number` as a varint field.
pub fn put_varint_field(out: &mut Vec<u8>, number: u32, value: u64) {
    put_varint(out, u64::from(number) << 3);
    put_varint(out, value);
}

/// Appends field `number` as a length-delimited field.
pub fn put_bytes_field(out: &mut Vec<u8>, number: u32, value: &[u8]) {
    put_varint(out, (u64::from(number) << 3) | 2);
    put_varint(out, value.len() as u64);
    out.extend_from_slice(value);
}

/// A field read from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field<'a> {
    /// Wire type 0.
    Varint(u64),
    /// Wire type 2.
    Bytes(&'a [u8]),
    /// Wire types 1 and 5 (skipped by these messages).
    Fixed,
}

/// The fields of a message, in order, as `(number, value)`.
pub fn fields(mut input: &[u8]) -> Result<Vec<(u32, Field<'_>)>, PbError> {
    let mut out = Vec::new();
    while !input.is_empty() {
        let (key, used) = get_varint(input)?.ok_or(PbError::Truncated)?;
        input = &input[used..];
        let number = u32::try_from(key >> 3).map_err(|_| PbError::VarintOverflow)?;
        let field = match (key & 7) as u8 {
            0 => {
                let (value, used) = get_varint(input)?.ok_or(PbError::Truncated)?;
                input = &input[used..];
                Field::Varint(value)
            }
            2 => {
                let (len, used) = get_varint(input)?.ok_or(PbError::Truncated)?;
                let len = usize::try_from(len).map_err(|_| PbError::VarintOverflow)?;
                let rest = &input[used..];
                if rest.len() < len {
                    return Err(PbError::Truncated);
                }
                input = &rest[len..];
                Field::Bytes(&rest[..len])
            }
            1 => {
                input = input.get(8..).ok_or(PbError::Truncated)?;
                Field::Fixed
            }
            5 => {
                input = input.get(4..).ok_or(PbError::Truncated)?;
                Field::Fixed
            }
            other => return Err(PbError::WireType(other)),
        };
        out.push((number, field));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip_and_refuse_overflow() {
        for value in [
            0,
            1,
            127,
            128,
            300,
            16_383,
            16_384,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            assert_eq!(get_varint(&out), Ok(Some((value, out.len()))), "{value}");
            assert_eq!(get_varint(&out[..out.len() - 1]), Ok(None), "{value}");
        }
        assert_eq!(get_varint(&[0xff; 11]), Err(PbError::VarintOverflow));
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            Err(PbError::VarintOverflow)
        );
    }

    #[test]
    fn frames_wait_for_their_bytes_and_respect_the_limit() {
        let frame = length_prefixed(b"hello");
        assert_eq!(split_frame(&frame[..3], 64), Ok(None));
        assert_eq!(split_frame(&frame, 64), Ok(Some((&b"hello"[..], 6))));
        assert_eq!(
            split_frame(&length_prefixed(&[0; 100]), 64),
            Err(PbError::TooLarge { len: 100, max: 64 })
        );
        // Refused from the prefix alone, before the body arrives.
        assert_eq!(
            split_frame(&[0x80, 0x80, 0x04], 64),
            Err(PbError::TooLarge {
                len: 65_536,
                max: 64
            })
        );
    }

    #[test]
    fn fields_are_read_and_unknown_ones_skipped() {
        let mut msg = Vec::new();
        put_varint_field(&mut msg, 1, 0);
        put_bytes_field(&mut msg, 2, b"sdp");
        put_varint(&mut msg, (7 << 3) | 5);
        msg.extend_from_slice(&[1, 2, 3, 4]);
        assert_eq!(
            fields(&msg),
            Ok(vec![
                (1, Field::Varint(0)),
                (2, Field::Bytes(b"sdp")),
                (7, Field::Fixed)
            ])
        );
        assert_eq!(fields(&msg[..msg.len() - 1]), Err(PbError::Truncated));
        assert_eq!(fields(&[(1 << 3) | 3]), Err(PbError::WireType(3)));
    }
}
