//! Message ids and receipt handles: opaque strings to clients, decoded only here.
//!
//! A receipt names one delivery: the queue incarnation, the message offset and a
//! random token drawn at delivery. A receipt from another queue (or an earlier
//! incarnation of this one) fails to match the incarnation; a receipt of an earlier
//! delivery fails the token check in the state machine.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::error::BrokerError;

const RECEIPT_VERSION: u8 = 1;
const RECEIPT_LEN: usize = 1 + 8 + 8 + 8;

/// A decoded receipt handle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// The message's offset in its queue's message log.
    pub offset: u64,
    /// The delivery's token.
    pub token: u64,
}

/// Encodes the receipt of one delivery.
pub fn encode_receipt(incarnation: u64, offset: u64, token: u64) -> String {
    let mut bytes = [0u8; RECEIPT_LEN];
    bytes[0] = RECEIPT_VERSION;
    bytes[1..9].copy_from_slice(&incarnation.to_le_bytes());
    bytes[9..17].copy_from_slice(&offset.to_le_bytes());
    bytes[17..25].copy_from_slice(&token.to_le_bytes());
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes a receipt handle for the queue with `incarnation`.
pub fn decode_receipt(handle: &str, incarnation: u64) -> Result<Receipt, BrokerError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(handle)
        .map_err(|_| BrokerError::ReceiptInvalid("not a receipt handle"))?;
    let bytes: [u8; RECEIPT_LEN] = bytes
        .try_into()
        .map_err(|_| BrokerError::ReceiptInvalid("not a receipt handle"))?;
    if bytes[0] != RECEIPT_VERSION {
        return Err(BrokerError::ReceiptInvalid("unknown receipt version"));
    }
    let field = |at: usize| {
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(word)
    };
    if field(1) != incarnation {
        return Err(BrokerError::ReceiptInvalid(
            "the receipt belongs to another queue or an earlier queue of this name",
        ));
    }
    Ok(Receipt {
        offset: field(9),
        token: field(17),
    })
}

/// The message id clients see: unique across queues and incarnations.
pub fn message_id(incarnation: u64, offset: u64) -> String {
    format!("{incarnation:016x}-{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_round_trip_and_reject_others() {
        let handle = encode_receipt(7, 42, 99);
        assert_eq!(
            decode_receipt(&handle, 7).expect("decodes"),
            Receipt {
                offset: 42,
                token: 99
            }
        );
        assert!(matches!(
            decode_receipt(&handle, 8),
            Err(BrokerError::ReceiptInvalid(_))
        ));
        for forged in ["", "abc", "!!!!", &handle[1..], &format!("{handle}A")] {
            assert!(
                matches!(
                    decode_receipt(forged, 7),
                    Err(BrokerError::ReceiptInvalid(_))
                ),
                "{forged:?}"
            );
        }
    }
}
