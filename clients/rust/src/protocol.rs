//! The wire format, sans I/O: frames, requests, responses and notifications.
//!
//! A frame is a 4-byte big-endian length `N` and then `N` bytes holding exactly one
//! MessagePack value. Requests are `[0, msgid, method, params]`, with `params` `[]` or
//! `[{named arguments}]`; responses `[1, msgid, error, result]`; notifications
//! `[2, name, [payload]]`.

use rmpv::Value;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::notification::Notification;

/// The socket path used when neither an explicit path nor `$MADSIDECAR_SOCKET` is given.
pub const DEFAULT_SOCKET: &str = "/run/madsidecar/madsidecar.sock";
/// The default largest frame the client accepts: the server's default, 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4 * 1024 * 1024;

/// The socket path: `explicit`, else `$MADSIDECAR_SOCKET` (if set and not empty), else
/// [`DEFAULT_SOCKET`].
pub fn socket_path(explicit: Option<&str>) -> String {
    if let Some(path) = explicit {
        return path.to_owned();
    }
    match std::env::var("MADSIDECAR_SOCKET") {
        Ok(path) if !path.is_empty() => path,
        _ => DEFAULT_SOCKET.to_owned(),
    }
}

/// Encode one request frame (length prefix included). `params` is a struct or map of the
/// named arguments (or `()` for none); an empty map is sent as the empty params array.
pub fn encode_request<P: Serialize + ?Sized>(
    msgid: u32,
    method: &str,
    params: &P,
) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(32 + method.len());
    out.extend_from_slice(&[0, 0, 0, 0]);
    encode_request_body(&mut out, msgid, method, params)?;
    let len = u32::try_from(out.len() - 4)
        .map_err(|_| Error::Codec("request larger than 4 GiB".into()))?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}

fn encode_request_body<P: Serialize + ?Sized>(
    out: &mut Vec<u8>,
    msgid: u32,
    method: &str,
    params: &P,
) -> Result<()> {
    // Writing to a Vec cannot fail.
    let codec = |e: rmp::encode::ValueWriteError| Error::Codec(e.to_string());
    rmp::encode::write_array_len(out, 4).map_err(codec)?;
    rmp::encode::write_uint(out, 0).map_err(codec)?;
    rmp::encode::write_uint(out, u64::from(msgid)).map_err(codec)?;
    rmp::encode::write_str(out, method).map_err(codec)?;
    // params: [] when there are no arguments, else [{...}].
    let start = out.len();
    out.push(0x91);
    let mut ser = rmp_serde::Serializer::new(&mut *out).with_struct_map();
    params
        .serialize(&mut ser)
        .map_err(|e| Error::Codec(format!("{method}: cannot encode the arguments: {e}")))?;
    match &out[start + 1..] {
        // `()` encodes as nil, an empty map as 0x80: both mean "no arguments".
        [0xc0] | [0x80] => {
            out.truncate(start);
            out.push(0x90);
        }
        [first, ..] if is_map_marker(*first) => {}
        _ => {
            return Err(Error::Codec(format!(
                "{method}: the arguments must encode as a map"
            )));
        }
    }
    Ok(())
}

fn is_map_marker(byte: u8) -> bool {
    (0x80..=0x8f).contains(&byte) || byte == 0xde || byte == 0xdf
}

/// A message the server sent.
#[derive(Clone, Debug, PartialEq)]
pub enum Message {
    /// `[1, msgid, error, result]`: `Err` holds the error map.
    Response {
        msgid: u32,
        outcome: std::result::Result<Value, Value>,
    },
    /// `[2, name, [payload]]`.
    Notification(Notification),
}

/// Decode one frame body (without its length prefix) into a [`Message`].
///
/// The body must hold exactly one MessagePack value shaped as a response or a
/// notification; anything else is [`Error::Protocol`].
pub fn decode_message(body: &[u8]) -> Result<Message> {
    let mut rest = body;
    let value = rmpv::decode::read_value(&mut rest)
        .map_err(|e| Error::Protocol(format!("undecodable frame: {e}")))?;
    if !rest.is_empty() {
        return Err(Error::Protocol(format!(
            "{} bytes after the frame's value",
            rest.len()
        )));
    }
    let items = match value {
        Value::Array(items) => items,
        other => return Err(unexpected(&other)),
    };
    let mut it = items.into_iter();
    match (it.next(), it.next(), it.next(), it.next(), it.next()) {
        (Some(kind), Some(msgid), Some(error), Some(result), None) if kind.as_u64() == Some(1) => {
            let msgid = msgid
                .as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| Error::Protocol(format!("response msgid {msgid} is no uint32")))?;
            let outcome = if error.is_nil() {
                Ok(result)
            } else {
                Err(error)
            };
            Ok(Message::Response { msgid, outcome })
        }
        (Some(kind), Some(Value::String(name)), Some(params), None, None)
            if kind.as_u64() == Some(2) =>
        {
            let name = name
                .into_str()
                .ok_or_else(|| Error::Protocol("notification name is not UTF-8".into()))?;
            let payload = match params {
                Value::Array(mut params) if !params.is_empty() => params.swap_remove(0),
                _ => Value::Map(Vec::new()),
            };
            Ok(Message::Notification(Notification::from_wire(
                name, payload,
            )))
        }
        (a, b, c, d, e) => {
            let items: Vec<Value> = [a, b, c, d, e].into_iter().flatten().collect();
            Err(unexpected(&Value::Array(items)))
        }
    }
}

fn unexpected(value: &Value) -> Error {
    let mut text = value.to_string();
    if text.len() > 200 {
        let mut cut = 200;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    Error::Protocol(format!("unexpected message from the sidecar: {text}"))
}

/// Splits a byte stream into frame bodies, checking each header against a limit before
/// anything of the body is buffered.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_bytes: usize,
}

impl FrameDecoder {
    pub fn new(max_frame_bytes: usize) -> Self {
        FrameDecoder { max_frame_bytes }
    }

    /// Look at the start of `buf`: `Ok(Some(n))` when a whole frame with an `n`-byte body
    /// is there, `Ok(None)` when more bytes are needed (`buf` may grow to hold the
    /// frame: its header passed the check), `Err` for a header over the limit or zero.
    pub fn check(&self, buf: &[u8]) -> Result<Option<usize>> {
        if buf.len() < 4 {
            return Ok(None);
        }
        let n = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if n == 0 {
            return Err(Error::Protocol("zero-length frame".into()));
        }
        if n > self.max_frame_bytes {
            return Err(Error::FrameLimitExceeded {
                size: n as u64,
                limit: self.max_frame_bytes as u64,
            });
        }
        Ok((buf.len() >= 4 + n).then_some(n))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_byte_by_byte() {
        let frame = encode_request(1, "ping", &()).unwrap();
        assert_eq!(
            frame,
            [0, 0, 0, 9, 0x94, 0, 1, 0xa4, b'p', b'i', b'n', b'g', 0x90]
        );
        let msg = decode_message(&[0x94, 1, 1, 0xc0, 0xa4, b'p', b'o', b'n', b'g']).unwrap();
        assert_eq!(
            msg,
            Message::Response {
                msgid: 1,
                outcome: Ok(Value::from("pong"))
            }
        );
    }

    #[test]
    fn frame_limits() {
        let dec = FrameDecoder::new(1024);
        assert!(matches!(dec.check(&[0, 0, 0]), Ok(None)));
        assert!(matches!(dec.check(&[0, 0, 4, 0]), Ok(None)));
        assert!(matches!(
            dec.check(&[0, 0, 4, 1]),
            Err(Error::FrameLimitExceeded {
                size: 1025,
                limit: 1024
            })
        ));
        assert!(matches!(dec.check(&[0, 0, 0, 0]), Err(Error::Protocol(_))));
        assert!(matches!(dec.check(&[0, 0, 0, 1, 0xc0]), Ok(Some(1))));
    }

    #[test]
    fn trailing_bytes_and_bad_shapes_are_protocol_errors() {
        assert!(matches!(
            decode_message(&[0xc0, 0xc0]),
            Err(Error::Protocol(_))
        ));
        assert!(matches!(decode_message(&[0xc1]), Err(Error::Protocol(_))));
        assert!(matches!(
            decode_message(&[0x93, 0, 1, 2]),
            Err(Error::Protocol(_))
        ));
    }

    #[test]
    fn socket_path_prefers_explicit() {
        assert_eq!(socket_path(Some("/x.sock")), "/x.sock");
    }
}
