//! Payload values: our `Value` (JSON with integers apart from doubles) ↔ JSON.

use std::collections::HashMap;

use serde_json::{Map, Number, Value as Json};

use crate::grpc::proto::{self, value::Kind};
use crate::storage::StorageError;

pub fn to_json(value: proto::Value) -> Result<Json, StorageError> {
    Ok(match value.kind {
        None => {
            return Err(StorageError::bad_request(
                "Wrong input: a payload value has no kind set",
            ));
        }
        Some(Kind::NullValue(_)) => Json::Null,
        Some(Kind::DoubleValue(d)) => Number::from_f64(d).map(Json::Number).ok_or_else(|| {
            StorageError::bad_request(format!(
                "Wrong input: {d} is not a JSON number (payload values must be finite)"
            ))
        })?,
        Some(Kind::IntegerValue(i)) => Json::from(i),
        Some(Kind::StringValue(s)) => Json::String(s),
        Some(Kind::BoolValue(b)) => Json::Bool(b),
        Some(Kind::StructValue(s)) => Json::Object(to_json_object(s.fields)?),
        Some(Kind::ListValue(l)) => Json::Array(
            l.values
                .into_iter()
                .map(to_json)
                .collect::<Result<_, _>>()?,
        ),
    })
}

pub fn to_json_object(
    fields: HashMap<String, proto::Value>,
) -> Result<Map<String, Json>, StorageError> {
    fields
        .into_iter()
        .map(|(k, v)| Ok((k, to_json(v)?)))
        .collect()
}

pub fn from_json(value: Json) -> proto::Value {
    let kind = match value {
        Json::Null => Kind::NullValue(proto::NullValue::NullValue as i32),
        Json::Bool(b) => Kind::BoolValue(b),
        Json::Number(n) => match n.as_i64() {
            Some(i) => Kind::IntegerValue(i),
            // Beyond i64 (large u64) or fractional: a double, as Qdrant sends it.
            None => Kind::DoubleValue(n.as_f64().unwrap_or(f64::NAN)),
        },
        Json::String(s) => Kind::StringValue(s),
        Json::Array(items) => Kind::ListValue(proto::ListValue {
            values: items.into_iter().map(from_json).collect(),
        }),
        Json::Object(map) => Kind::StructValue(proto::Struct {
            fields: from_json_object(map),
        }),
    };
    proto::Value { kind: Some(kind) }
}

pub fn from_json_object(map: Map<String, Json>) -> HashMap<String, proto::Value> {
    map.into_iter().map(|(k, v)| (k, from_json(v))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payloads_round_trip_with_integers_kept_apart() {
        let payload = json!({
            "n": 7, "big": -9_000_000_000i64, "f": 0.5, "s": "x", "b": true, "none": null,
            "list": [1, "two", [3.5]], "obj": {"inner": {"deep": false}}
        });
        let Json::Object(map) = payload.clone() else {
            unreachable!()
        };
        let proto = from_json_object(map);
        assert!(matches!(proto["n"].kind, Some(Kind::IntegerValue(7))));
        assert!(matches!(proto["f"].kind, Some(Kind::DoubleValue(_))));
        assert_eq!(Json::Object(to_json_object(proto).unwrap()), payload);
    }

    #[test]
    fn values_json_cannot_hold_are_refused() {
        let nan = proto::Value {
            kind: Some(Kind::DoubleValue(f64::NAN)),
        };
        assert!(to_json(nan).is_err());
        assert!(to_json(proto::Value { kind: None }).is_err());
    }
}
