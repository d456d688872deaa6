//! The protobuf codec of every gRPC method: prost's encoding, and a decoder that
//! refuses what it would otherwise drop.
//!
//! A protobuf decoder skips fields it does not know. For snapfs that would mean
//! quietly ignoring something a client asked for — a field of a newer Qdrant release,
//! or of a Qdrant feature snapfs leaves out of its definitions — and answering as if it
//! had been honoured. So a message holding fields our definitions do not have is
//! refused with `INVALID_ARGUMENT`, naming them.
//!
//! The check costs little when nothing is unknown: prost measures the decoded message
//! again (`encoded_len`), and only when that differs from the bytes received are the
//! bytes walked against the compiled descriptors (`build.rs` keeps them) to find the
//! unknown fields. A sender may also encode known fields differently from prost (an
//! unpacked repeated number, a default written out); the walk then finds nothing and
//! the message is accepted.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::LazyLock;

use bytes::Buf;
use prost::{Message, Name};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

/// The descriptors of our `.proto` files, compiled by `build.rs`.
const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/qdrant_descriptors.bin"));

/// prost's codec with a decoder that refuses unknown fields (see the module note).
/// Named by `build.rs` as the codec of every generated service and client.
#[derive(Debug, Clone)]
pub struct StrictCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for StrictCodec<T, U> {
    fn default() -> Self {
        StrictCodec(PhantomData)
    }
}

impl<T, U> Codec for StrictCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Name + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = StrictDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        StrictDecoder(PhantomData)
    }
}

#[derive(Debug)]
pub struct StrictDecoder<U>(PhantomData<U>);

impl<U: Message + Name + Default> Decoder for StrictDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let bytes = buf.copy_to_bytes(buf.remaining());
        // As tonic's own codec: bytes that do not parse are INTERNAL (gRPC's rule).
        let message = U::decode(bytes.clone()).map_err(|e| Status::internal(e.to_string()))?;
        if message.encoded_len() != bytes.len() {
            let unknown = unknown_fields(&U::full_name(), &bytes);
            if !unknown.is_empty() {
                return Err(Status::invalid_argument(format!(
                    "the request holds fields snapfs does not serve, which it would otherwise ignore: {unknown}; \
                     see docs/COMPATIBILITY.md for what snapfs serves over gRPC"
                )));
            }
        }
        Ok(Some(message))
    }
}

/// Where each message's fields point: field number → (name, message type if any).
struct Shapes(HashMap<String, HashMap<u32, FieldShape>>);

struct FieldShape {
    name: String,
    /// The full name of the field's message type (maps are messages of entries).
    message: Option<String>,
}

static SHAPES: LazyLock<Shapes> = LazyLock::new(|| {
    let set = prost_types::FileDescriptorSet::decode(DESCRIPTORS)
        .expect("build.rs wrote a valid descriptor set");
    let mut shapes = HashMap::new();
    for file in &set.file {
        let package = file.package.clone().unwrap_or_default();
        for message in &file.message_type {
            add_shapes(&mut shapes, &package, message);
        }
    }
    Shapes(shapes)
});

fn add_shapes(
    shapes: &mut HashMap<String, HashMap<u32, FieldShape>>,
    scope: &str,
    message: &prost_types::DescriptorProto,
) {
    let name = format!("{scope}.{}", message.name());
    let fields = message
        .field
        .iter()
        .map(|field| {
            let message = (field.r#type() == prost_types::field_descriptor_proto::Type::Message)
                .then(|| field.type_name().trim_start_matches('.').to_string());
            (
                field.number() as u32,
                FieldShape {
                    name: field.name().to_string(),
                    message,
                },
            )
        })
        .collect();
    for nested in &message.nested_type {
        add_shapes(shapes, &name, nested);
    }
    shapes.insert(name, fields);
}

/// At most this many different unknown fields are named in a refusal; the rest are
/// counted. A message of millions of unknown fields (a request of 32 MiB of `08 00`)
/// must not become millions of names in memory and in the answer's header.
const NAMED_UNKNOWN_FIELDS: usize = 8;

/// The unknown fields found in a message: the first few different ones by name, and
/// how many occurrences there were in all.
#[derive(Debug, Default, PartialEq)]
struct Unknown {
    named: Vec<String>,
    occurrences: u64,
}

impl Unknown {
    fn is_empty(&self) -> bool {
        self.occurrences == 0
    }

    fn add(&mut self, describe: impl FnOnce() -> String) {
        self.occurrences += 1;
        if self.named.len() < NAMED_UNKNOWN_FIELDS {
            let name = describe();
            if !self.named.contains(&name) {
                self.named.push(name);
            }
        }
    }
}

impl std::fmt::Display for Unknown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.named.join(", "))?;
        let shown = self.named.len() as u64;
        if self.occurrences > shown {
            write!(
                f,
                " ({} unknown fields in all; only the first different ones are named)",
                self.occurrences
            )?;
        }
        Ok(())
    }
}

/// The fields of `bytes` (a `message` on the wire) that its descriptor does not
/// have, at any depth, each as "field N of <message> (at <path>)".
fn unknown_fields(message: &str, bytes: &[u8]) -> Unknown {
    let mut found = Unknown::default();
    walk(&SHAPES, message, bytes, "", &mut found);
    found
}

fn walk(shapes: &Shapes, message: &str, mut bytes: &[u8], path: &str, found: &mut Unknown) {
    let Some(fields) = shapes.0.get(message) else {
        return;
    };
    while let Some((number, value)) = next_field(&mut bytes) {
        match fields.get(&number) {
            None => found.add(|| {
                let short = message.rsplit('.').next().unwrap_or(message);
                if path.is_empty() {
                    format!("field {number} of {short}")
                } else {
                    format!("field {number} of {short} (at `{path}`)")
                }
            }),
            Some(FieldShape {
                name,
                message: Some(inner),
            }) => {
                if let Some(value) = value {
                    let inner_path = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    walk(shapes, inner, value, &inner_path, found);
                }
            }
            Some(_) => {}
        }
    }
}

/// The next field on the wire: its number, and its bytes if length-delimited.
/// `None` at the end (or at bytes prost would not have decoded, which do not occur
/// after a successful decode).
fn next_field<'a>(bytes: &mut &'a [u8]) -> Option<(u32, Option<&'a [u8]>)> {
    let key = read_varint(bytes)?;
    let number = u32::try_from(key >> 3).ok()?;
    let value = match key & 7 {
        0 => read_varint(bytes).map(|_| None)?,
        1 => take(bytes, 8).map(|_| None)?,
        5 => take(bytes, 4).map(|_| None)?,
        2 => {
            let len = usize::try_from(read_varint(bytes)?).ok()?;
            Some(take(bytes, len)?)
        }
        // Groups (deprecated) and invalid wire types.
        _ => return None,
    };
    Some((number, value))
}

fn read_varint(bytes: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes.split_first()?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

fn take<'a>(bytes: &mut &'a [u8], len: usize) -> Option<&'a [u8]> {
    if bytes.len() < len {
        return None;
    }
    let (value, rest) = bytes.split_at(len);
    *bytes = rest;
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grpc::proto;

    fn with_extra_field(message: &impl Message, extra: &[u8]) -> Vec<u8> {
        let mut bytes = message.encode_to_vec();
        bytes.extend_from_slice(extra);
        bytes
    }

    /// A field's key on the wire (a varint of number and wire type).
    fn key(number: u32, wire_type: u32) -> Vec<u8> {
        let mut value = (number << 3) | wire_type;
        let mut bytes = Vec::new();
        while value >= 0x80 {
            bytes.push((value as u8) | 0x80);
            value >>= 7;
        }
        bytes.push(value as u8);
        bytes
    }

    #[test]
    fn known_fields_pass_and_unknown_ones_are_named_at_any_depth() {
        let upsert = proto::UpsertPoints {
            collection_name: "c".into(),
            points: vec![proto::PointStruct {
                id: Some(proto::PointId {
                    point_id_options: Some(proto::point_id::PointIdOptions::Num(1)),
                }),
                ..Default::default()
            }],
            ..Default::default()
        };
        let plain = upsert.encode_to_vec();
        assert!(unknown_fields("qdrant.UpsertPoints", &plain).is_empty());
        let named = |message: &str, bytes: &[u8]| unknown_fields(message, bytes).named;

        // Field 40 (varint 7) at the top.
        let top = with_extra_field(&upsert, &[key(40, 0), vec![7]].concat());
        assert_eq!(
            named("qdrant.UpsertPoints", &top),
            ["field 40 of UpsertPoints"]
        );

        // Field 9 inside the first point: rebuild the point's bytes with it.
        let mut point = upsert.points[0].encode_to_vec();
        point.extend_from_slice(&[key(9, 0), vec![1]].concat());
        let mut nested = vec![(1 << 3) | 2, 1, b'c', (3 << 3) | 2, point.len() as u8];
        nested.extend_from_slice(&point);
        assert_eq!(
            named("qdrant.UpsertPoints", &nested),
            ["field 9 of PointStruct (at `points`)"]
        );
    }

    #[test]
    fn the_decoder_refuses_unknown_fields_and_accepts_the_rest() {
        let request = proto::CountPoints {
            collection_name: "c".into(),
            exact: Some(true),
            ..Default::default()
        };
        let decode = |bytes: Vec<u8>| {
            let message = proto::CountPoints::decode(&bytes[..]).unwrap();
            if message.encoded_len() != bytes.len() {
                unknown_fields(&proto::CountPoints::full_name(), &bytes).named
            } else {
                vec![]
            }
        };
        assert!(decode(request.encode_to_vec()).is_empty());
        // A newer client's field 30, as a length-delimited value.
        let unknown = decode(with_extra_field(
            &request,
            &[key(30, 2), vec![2, 8, 1]].concat(),
        ));
        assert_eq!(unknown, ["field 30 of CountPoints"]);
        // A known field written twice (the last one counts): not unknown.
        let mut explicit = request.encode_to_vec();
        explicit.extend_from_slice(&[key(3, 0), vec![1]].concat());
        assert!(decode(explicit).is_empty());
    }

    #[test]
    fn millions_of_unknown_fields_are_counted_not_listed() {
        // 4 MiB of `08 00` (field 1, varint 0): field 1 is unknown to the empty
        // HealthCheckRequest, two million times over.
        let bytes = [key(1, 0), vec![0]].concat().repeat(2 * 1024 * 1024);
        let unknown = unknown_fields("qdrant.HealthCheckRequest", &bytes);
        assert_eq!(unknown.named, ["field 1 of HealthCheckRequest"]);
        assert_eq!(unknown.occurrences, 2 * 1024 * 1024);
        let text = unknown.to_string();
        assert!(text.len() < 200, "{text}");
        assert!(text.contains("2097152 unknown fields in all"), "{text}");

        // Many different unknown fields: only the first few are named.
        let many: Vec<u8> = (100..10_000u32)
            .flat_map(|n| [key(n, 0), vec![1]].concat())
            .collect();
        let unknown = unknown_fields("qdrant.CountPoints", &many);
        assert_eq!(unknown.named.len(), NAMED_UNKNOWN_FIELDS);
        assert_eq!(unknown.occurrences, 9_900);
        assert!(unknown.to_string().len() < 400, "{unknown}");
    }
}
