//! How queue messages, journal events and snapshots are laid out on disk.
//!
//! Messages are ordinary records in the queue's message log: the body is the value,
//! user attributes are headers, and system fields are headers under the reserved
//! `ferry.` prefix. Journal events are records whose value is a tag byte followed by
//! varints. Snapshots are one file: a magic, the offsets they cover, varint-encoded
//! messages and dedup entries, and a CRC32C over everything before it.

use std::sync::Arc;

use ferry_records::{RecordError, varint};

use crate::queue::state::{Event, MessageState, NewMessage, Status};

/// Prefix of attribute names reserved for Ferry's own fields.
pub const RESERVED_PREFIX: &str = "ferry.";
/// Header: end of the message's delay, ms since the epoch (decimal).
pub const H_VISIBLE_AT: &str = "ferry.visible-at";
/// Header: FIFO message group.
pub const H_GROUP: &str = "ferry.group";
/// Header: dedup id.
pub const H_DEDUP: &str = "ferry.dedup";
/// Header: dead-letter origin queue.
pub const H_DLQ_SOURCE: &str = "ferry.dlq.source";
/// Header: the message's id in the origin queue.
pub const H_DLQ_SOURCE_ID: &str = "ferry.dlq.source-id";
/// Header: why it was dead-lettered.
pub const H_DLQ_REASON: &str = "ferry.dlq.reason";
/// Header: receive count when dead-lettered.
pub const H_DLQ_COUNT: &str = "ferry.dlq.receive-count";
/// Header: when it was dead-lettered.
pub const H_DLQ_AT: &str = "ferry.dlq.at";

/// A message as the queue stores and delivers it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StoredMessage {
    /// Payload.
    pub body: Vec<u8>,
    /// User attributes, in the order given.
    pub attributes: Vec<(String, String)>,
    /// End of its delay; `None` for no delay.
    pub visible_at_ms: Option<i64>,
    /// FIFO message group.
    pub group: Option<String>,
    /// Dedup id.
    pub dedup_id: Option<String>,
    /// Set on messages dead-lettered into this queue.
    pub dead_letter: Option<DeadLetterOrigin>,
}

/// Where a dead-lettered message came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeadLetterOrigin {
    /// Queue it was dead-lettered from.
    pub source_queue: String,
    /// Its id there.
    pub source_message_id: String,
    /// Why.
    pub reason: String,
    /// Receives it had.
    pub receive_count: u32,
    /// When it moved.
    pub at_ms: i64,
}

impl StoredMessage {
    /// The record headers carrying attributes and system fields.
    pub fn headers(&self) -> Vec<(&str, Vec<u8>)> {
        let mut headers: Vec<(&str, Vec<u8>)> = self
            .attributes
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_bytes().to_vec()))
            .collect();
        if let Some(at) = self.visible_at_ms {
            headers.push((H_VISIBLE_AT, at.to_string().into_bytes()));
        }
        if let Some(group) = &self.group {
            headers.push((H_GROUP, group.as_bytes().to_vec()));
        }
        if let Some(dedup) = &self.dedup_id {
            headers.push((H_DEDUP, dedup.as_bytes().to_vec()));
        }
        if let Some(origin) = &self.dead_letter {
            headers.push((H_DLQ_SOURCE, origin.source_queue.as_bytes().to_vec()));
            headers.push((
                H_DLQ_SOURCE_ID,
                origin.source_message_id.as_bytes().to_vec(),
            ));
            headers.push((H_DLQ_REASON, origin.reason.as_bytes().to_vec()));
            headers.push((H_DLQ_COUNT, origin.receive_count.to_string().into_bytes()));
            headers.push((H_DLQ_AT, origin.at_ms.to_string().into_bytes()));
        }
        headers
    }

    /// Decodes a stored record.
    pub fn from_record(record: &ferry_records::Record<'_>) -> Result<Self, RecordError> {
        let mut message = StoredMessage {
            body: record.value.to_vec(),
            ..StoredMessage::default()
        };
        let mut origin = DeadLetterOrigin::default();
        let mut has_origin = false;
        for header in &record.headers {
            let text = std::str::from_utf8(header.value)
                .map_err(|_| RecordError::Malformed("queue header value is not UTF-8"))?;
            let number = || {
                text.parse::<i64>()
                    .map_err(|_| RecordError::Malformed("queue header is not a number"))
            };
            match header.key {
                H_VISIBLE_AT => message.visible_at_ms = Some(number()?),
                H_GROUP => message.group = Some(text.to_owned()),
                H_DEDUP => message.dedup_id = Some(text.to_owned()),
                H_DLQ_SOURCE => {
                    has_origin = true;
                    origin.source_queue = text.to_owned();
                }
                H_DLQ_SOURCE_ID => origin.source_message_id = text.to_owned(),
                H_DLQ_REASON => origin.reason = text.to_owned(),
                H_DLQ_COUNT => origin.receive_count = u32::try_from(number()?).unwrap_or(0),
                H_DLQ_AT => origin.at_ms = number()?,
                key => message.attributes.push((key.to_owned(), text.to_owned())),
            }
        }
        if has_origin {
            message.dead_letter = Some(origin);
        }
        Ok(message)
    }

    /// What the state machine needs to know about it.
    pub fn state_entry(&self, sent_at_ms: i64) -> NewMessage {
        NewMessage {
            sent_at_ms,
            visible_at_ms: self.visible_at_ms.unwrap_or(sent_at_ms),
            group: self.group.as_deref().map(Arc::from),
            dedup_id: self.dedup_id.clone(),
        }
    }
}

const EV_RECEIVED: u8 = 1;
const EV_ACKED: u8 = 2;
const EV_VISIBILITY: u8 = 3;
const EV_DEAD_LETTERED: u8 = 4;
const EV_EXPIRED: u8 = 5;
const EV_PURGED: u8 = 6;

/// Encodes one journal event as a record value.
pub fn encode_event(event: &Event, buf: &mut Vec<u8>) {
    match *event {
        Event::Received {
            offset,
            receive_count,
            token,
            visible_at_ms,
        } => {
            buf.push(EV_RECEIVED);
            varint::put_u64(buf, offset);
            varint::put_u64(buf, u64::from(receive_count));
            buf.extend_from_slice(&token.to_le_bytes());
            varint::put_i64(buf, visible_at_ms);
        }
        Event::Acked { offset } => {
            buf.push(EV_ACKED);
            varint::put_u64(buf, offset);
        }
        Event::VisibilityChanged {
            offset,
            visible_at_ms,
        } => {
            buf.push(EV_VISIBILITY);
            varint::put_u64(buf, offset);
            varint::put_i64(buf, visible_at_ms);
        }
        Event::DeadLettered { offset } => {
            buf.push(EV_DEAD_LETTERED);
            varint::put_u64(buf, offset);
        }
        Event::Expired { offset } => {
            buf.push(EV_EXPIRED);
            varint::put_u64(buf, offset);
        }
        Event::Purged { below } => {
            buf.push(EV_PURGED);
            varint::put_u64(buf, below);
        }
    }
}

/// Decodes a journal record value.
pub fn decode_event(mut bytes: &[u8]) -> Result<Event, RecordError> {
    let buf = &mut bytes;
    let (&tag, rest) = buf
        .split_first()
        .ok_or(RecordError::Malformed("empty journal event"))?;
    *buf = rest;
    let event = match tag {
        EV_RECEIVED => {
            let offset = varint::get_u64(buf)?;
            let receive_count = u32::try_from(varint::get_u64(buf)?)
                .map_err(|_| RecordError::Malformed("receive count out of range"))?;
            let token = take_u64(buf)?;
            let visible_at_ms = varint::get_i64(buf)?;
            Event::Received {
                offset,
                receive_count,
                token,
                visible_at_ms,
            }
        }
        EV_ACKED => Event::Acked {
            offset: varint::get_u64(buf)?,
        },
        EV_VISIBILITY => Event::VisibilityChanged {
            offset: varint::get_u64(buf)?,
            visible_at_ms: varint::get_i64(buf)?,
        },
        EV_DEAD_LETTERED => Event::DeadLettered {
            offset: varint::get_u64(buf)?,
        },
        EV_EXPIRED => Event::Expired {
            offset: varint::get_u64(buf)?,
        },
        EV_PURGED => Event::Purged {
            below: varint::get_u64(buf)?,
        },
        _ => return Err(RecordError::Malformed("unknown journal event")),
    };
    if !buf.is_empty() {
        return Err(RecordError::Malformed("trailing bytes after journal event"));
    }
    Ok(event)
}

fn take_u64(buf: &mut &[u8]) -> Result<u64, RecordError> {
    let (head, rest) = buf
        .split_first_chunk::<8>()
        .ok_or(RecordError::Malformed("truncated journal event"))?;
    *buf = rest;
    Ok(u64::from_le_bytes(*head))
}

fn put_str(buf: &mut Vec<u8>, text: &str) {
    varint::put_u64(buf, text.len() as u64);
    buf.extend_from_slice(text.as_bytes());
}

fn get_str(buf: &mut &[u8]) -> Result<String, RecordError> {
    let len = usize::try_from(varint::get_u64(buf)?)
        .map_err(|_| RecordError::Malformed("string length out of range"))?;
    if buf.len() < len {
        return Err(RecordError::Malformed("truncated string"));
    }
    let (text, rest) = buf.split_at(len);
    *buf = rest;
    String::from_utf8(text.to_vec()).map_err(|_| RecordError::Malformed("string is not UTF-8"))
}

/// Snapshot file magic and version.
const SNAPSHOT_MAGIC: &[u8; 8] = b"FQSNAP01";

/// A queue's state at a point both logs reached, for fast recovery and compaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Message log offset up to which messages are included; replay continues here.
    pub messages_end: u64,
    /// Journal offset up to which events are applied; replay continues here.
    pub journal_end: u64,
    /// Every message held, oldest first.
    pub messages: Vec<(u64, MessageState)>,
    /// Dedup entries: (id, offset, first sent).
    pub dedup: Vec<(String, u64, i64)>,
}

impl Snapshot {
    /// Encodes the snapshot with its trailing CRC.
    pub fn encode(&self) -> Vec<u8> {
        let mut buf = Vec::with_capacity(64 + self.messages.len() * 24);
        buf.extend_from_slice(SNAPSHOT_MAGIC);
        varint::put_u64(&mut buf, self.messages_end);
        varint::put_u64(&mut buf, self.journal_end);
        varint::put_u64(&mut buf, self.messages.len() as u64);
        for (offset, m) in &self.messages {
            varint::put_u64(&mut buf, *offset);
            varint::put_i64(&mut buf, m.sent_at_ms);
            varint::put_i64(&mut buf, m.visible_at_ms);
            varint::put_u64(&mut buf, u64::from(m.receive_count));
            buf.extend_from_slice(&m.token.to_le_bytes());
            put_str(&mut buf, m.group.as_deref().unwrap_or(""));
            buf.push(u8::from(m.group.is_some()));
        }
        varint::put_u64(&mut buf, self.dedup.len() as u64);
        for (id, offset, sent_at) in &self.dedup {
            put_str(&mut buf, id);
            varint::put_u64(&mut buf, *offset);
            varint::put_i64(&mut buf, *sent_at);
        }
        let crc = crc32c::crc32c(&buf);
        buf.extend_from_slice(&crc.to_le_bytes());
        buf
    }

    /// Decodes and checks a snapshot file's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let (body, crc) = bytes
            .split_last_chunk::<4>()
            .ok_or(RecordError::Malformed("snapshot too short"))?;
        let stored = u32::from_le_bytes(*crc);
        let computed = crc32c::crc32c(body);
        if stored != computed {
            return Err(RecordError::CrcMismatch { stored, computed });
        }
        let mut buf = body
            .strip_prefix(SNAPSHOT_MAGIC)
            .ok_or(RecordError::Malformed("not a queue snapshot"))?;
        let buf = &mut buf;
        let messages_end = varint::get_u64(buf)?;
        let journal_end = varint::get_u64(buf)?;
        let count = varint::get_u64(buf)?;
        let mut messages = Vec::new();
        for _ in 0..count {
            let offset = varint::get_u64(buf)?;
            let sent_at_ms = varint::get_i64(buf)?;
            let visible_at_ms = varint::get_i64(buf)?;
            let receive_count = u32::try_from(varint::get_u64(buf)?)
                .map_err(|_| RecordError::Malformed("receive count out of range"))?;
            let token = take_u64(buf)?;
            let group = get_str(buf)?;
            let (&has_group, rest) = buf
                .split_first()
                .ok_or(RecordError::Malformed("truncated snapshot"))?;
            *buf = rest;
            messages.push((
                offset,
                MessageState {
                    sent_at_ms,
                    visible_at_ms,
                    receive_count,
                    token,
                    group: (has_group == 1).then(|| Arc::from(group.as_str())),
                    status: Status::Delayed,
                },
            ));
        }
        let count = varint::get_u64(buf)?;
        let mut dedup = Vec::new();
        for _ in 0..count {
            let id = get_str(buf)?;
            let offset = varint::get_u64(buf)?;
            let sent_at = varint::get_i64(buf)?;
            dedup.push((id, offset, sent_at));
        }
        if !buf.is_empty() {
            return Err(RecordError::Malformed("trailing bytes in snapshot"));
        }
        Ok(Snapshot {
            messages_end,
            journal_end,
            messages,
            dedup,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip() {
        let events = [
            Event::Received {
                offset: 7,
                receive_count: 3,
                token: u64::MAX - 5,
                visible_at_ms: 1_700_000_000_000,
            },
            Event::Acked { offset: 0 },
            Event::VisibilityChanged {
                offset: 9,
                visible_at_ms: -1,
            },
            Event::DeadLettered { offset: 1 << 40 },
            Event::Expired { offset: 3 },
            Event::Purged { below: 99 },
        ];
        for event in events {
            let mut buf = Vec::new();
            encode_event(&event, &mut buf);
            assert_eq!(decode_event(&buf), Ok(event.clone()));
            assert!(decode_event(&buf[..buf.len() - 1]).is_err());
        }
        assert!(decode_event(&[42, 1]).is_err());
        assert!(decode_event(&[]).is_err());
    }

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let snapshot = Snapshot {
            messages_end: 10,
            journal_end: 20,
            messages: vec![
                (
                    3,
                    MessageState {
                        sent_at_ms: 5,
                        visible_at_ms: 50,
                        receive_count: 2,
                        token: 77,
                        group: Some(Arc::from("g")),
                        status: Status::Delayed,
                    },
                ),
                (
                    4,
                    MessageState {
                        sent_at_ms: 6,
                        visible_at_ms: 6,
                        receive_count: 0,
                        token: 0,
                        group: None,
                        status: Status::Delayed,
                    },
                ),
            ],
            dedup: vec![("d-1".into(), 3, 5)],
        };
        let mut bytes = snapshot.encode();
        assert_eq!(Snapshot::decode(&bytes), Ok(snapshot));
        bytes[10] ^= 1;
        assert!(matches!(
            Snapshot::decode(&bytes),
            Err(RecordError::CrcMismatch { .. })
        ));
        assert!(Snapshot::decode(&[1, 2]).is_err());
    }

    #[test]
    fn messages_round_trip_through_records() {
        let message = StoredMessage {
            body: b"hello".to_vec(),
            attributes: vec![("k".into(), "v".into())],
            visible_at_ms: Some(123),
            group: Some("g1".into()),
            dedup_id: Some("d".into()),
            dead_letter: Some(DeadLetterOrigin {
                source_queue: "orders".into(),
                source_message_id: "1-0".into(),
                reason: "received 3 times".into(),
                receive_count: 3,
                at_ms: 1000,
            }),
        };
        let mut builder = ferry_records::BatchBuilder::new();
        let headers = message.headers();
        let refs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_slice())).collect();
        builder.push(None, &message.body, &refs, 42);
        let batch = builder.finish().expect("one record");
        let parsed = ferry_records::Batches::new(&batch)
            .next()
            .expect("a batch")
            .expect("valid");
        let record = parsed.records().next().expect("a record").expect("valid");
        assert_eq!(StoredMessage::from_record(&record), Ok(message));
    }
}
