//! Filters: our `Filter` message → the JSON form REST takes → the engine's `Filter`,
//! so a filter means the same over both protocols (the engine's own parser checks it).

use serde_json::{Map, Value as Json, json};

use super::points::point_id_json;
use crate::grpc::proto::{self, condition::ConditionOneOf, r#match::MatchValue};
use crate::storage::StorageError;

pub fn filter(filter: proto::Filter) -> Result<qdrant_edge::Filter, StorageError> {
    let json = filter_json(filter)?;
    serde_json::from_value(json)
        .map_err(|e| StorageError::bad_request(format!("Wrong input: invalid filter: {e}")))
}

/// An optional filter; an empty one (no conditions at all) is no filter.
pub fn optional_filter(
    value: Option<proto::Filter>,
) -> Result<Option<qdrant_edge::Filter>, StorageError> {
    value
        .filter(|f| *f != proto::Filter::default())
        .map(filter)
        .transpose()
}

fn filter_json(filter: proto::Filter) -> Result<Json, StorageError> {
    let mut out = Map::new();
    for (key, conditions) in [
        ("should", filter.should),
        ("must", filter.must),
        ("must_not", filter.must_not),
    ] {
        if !conditions.is_empty() {
            out.insert(key.into(), conditions_json(conditions)?);
        }
    }
    if let Some(min) = filter.min_should {
        out.insert(
            "min_should".into(),
            json!({"conditions": conditions_json(min.conditions)?, "min_count": min.min_count}),
        );
    }
    Ok(Json::Object(out))
}

fn conditions_json(conditions: Vec<proto::Condition>) -> Result<Json, StorageError> {
    conditions
        .into_iter()
        .map(condition_json)
        .collect::<Result<Vec<_>, _>>()
        .map(Json::Array)
}

fn condition_json(condition: proto::Condition) -> Result<Json, StorageError> {
    Ok(match condition.condition_one_of {
        None => {
            return Err(StorageError::bad_request(
                "Wrong input: a condition has nothing set",
            ));
        }
        Some(ConditionOneOf::Field(field)) => field_json(field)?,
        Some(ConditionOneOf::IsEmpty(c)) => json!({"is_empty": {"key": c.key}}),
        Some(ConditionOneOf::IsNull(c)) => json!({"is_null": {"key": c.key}}),
        Some(ConditionOneOf::HasId(c)) => {
            let ids = c
                .has_id
                .into_iter()
                .map(point_id_json)
                .collect::<Result<Vec<_>, _>>()?;
            json!({"has_id": ids})
        }
        Some(ConditionOneOf::HasVector(c)) => json!({"has_vector": c.has_vector}),
        Some(ConditionOneOf::Filter(f)) => filter_json(f)?,
        Some(ConditionOneOf::Nested(n)) => json!({"nested": {
            "key": n.key,
            "filter": filter_json(n.filter.ok_or_else(|| {
                StorageError::bad_request("Wrong input: a nested condition needs a filter")
            })?)?,
        }}),
    })
}

fn field_json(field: proto::FieldCondition) -> Result<Json, StorageError> {
    let mut out = Map::new();
    out.insert("key".into(), Json::String(field.key));
    if let Some(m) = field.r#match {
        out.insert("match".into(), match_json(m)?);
    }
    if let Some(r) = field.range {
        out.insert(
            "range".into(),
            bounds([("lt", r.lt), ("gt", r.gt), ("gte", r.gte), ("lte", r.lte)]),
        );
    }
    if let Some(r) = field.datetime_range {
        if out.contains_key("range") {
            return Err(StorageError::bad_request(
                "Wrong input: a field condition has both `range` and `datetime_range`",
            ));
        }
        let time = |t: Option<prost_types::Timestamp>| t.map(|t| t.to_string());
        out.insert(
            "range".into(),
            bounds([
                ("lt", time(r.lt)),
                ("gt", time(r.gt)),
                ("gte", time(r.gte)),
                ("lte", time(r.lte)),
            ]),
        );
    }
    if let Some(b) = field.geo_bounding_box {
        out.insert(
            "geo_bounding_box".into(),
            json!({"top_left": geo_point(b.top_left)?, "bottom_right": geo_point(b.bottom_right)?}),
        );
    }
    if let Some(r) = field.geo_radius {
        out.insert(
            "geo_radius".into(),
            json!({"center": geo_point(r.center)?, "radius": r.radius}),
        );
    }
    if let Some(p) = field.geo_polygon {
        let line = |l: proto::GeoLineString| -> Result<Json, StorageError> {
            let points = l
                .points
                .into_iter()
                .map(|p| geo_point(Some(p)))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(json!({"points": points}))
        };
        let exterior = line(
            p.exterior
                .ok_or_else(|| super::missing("`geo_polygon.exterior`"))?,
        )?;
        let interiors = p
            .interiors
            .into_iter()
            .map(line)
            .collect::<Result<Vec<_>, _>>()?;
        out.insert(
            "geo_polygon".into(),
            json!({"exterior": exterior, "interiors": interiors}),
        );
    }
    if let Some(c) = field.values_count {
        out.insert(
            "values_count".into(),
            bounds([("lt", c.lt), ("gt", c.gt), ("gte", c.gte), ("lte", c.lte)]),
        );
    }
    if let Some(is_empty) = field.is_empty {
        out.insert("is_empty".into(), Json::Bool(is_empty));
    }
    if let Some(is_null) = field.is_null {
        out.insert("is_null".into(), Json::Bool(is_null));
    }
    Ok(Json::Object(out))
}

fn match_json(m: proto::Match) -> Result<Json, StorageError> {
    Ok(match m.match_value {
        None => {
            return Err(StorageError::bad_request(
                "Wrong input: a match has nothing set",
            ));
        }
        Some(MatchValue::Keyword(s)) => json!({"value": s}),
        Some(MatchValue::Integer(i)) => json!({"value": i}),
        Some(MatchValue::Boolean(b)) => json!({"value": b}),
        Some(MatchValue::Text(t)) => json!({"text": t}),
        Some(MatchValue::Phrase(t)) => json!({"phrase": t}),
        Some(MatchValue::TextAny(t)) => json!({"text_any": t}),
        Some(MatchValue::Keywords(k)) => json!({"any": k.strings}),
        Some(MatchValue::Integers(i)) => json!({"any": i.integers}),
        Some(MatchValue::ExceptKeywords(k)) => json!({"except": k.strings}),
        Some(MatchValue::ExceptIntegers(i)) => json!({"except": i.integers}),
    })
}

/// The bounds that are set, as a JSON object.
fn bounds<T: serde::Serialize>(pairs: [(&str, Option<T>); 4]) -> Json {
    Json::Object(
        pairs
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k.to_string(), json!(v))))
            .collect(),
    )
}

fn geo_point(point: Option<proto::GeoPoint>) -> Result<Json, StorageError> {
    let p = point.ok_or_else(|| super::missing("a geo point"))?;
    Ok(json!({"lon": p.lon, "lat": p.lat}))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(key: &str, value: MatchValue) -> proto::Condition {
        proto::Condition {
            condition_one_of: Some(ConditionOneOf::Field(proto::FieldCondition {
                key: key.into(),
                r#match: Some(proto::Match {
                    match_value: Some(value),
                }),
                ..Default::default()
            })),
        }
    }

    #[test]
    fn a_filter_means_what_its_rest_form_means() {
        let grpc = proto::Filter {
            must: vec![
                field("kind", MatchValue::Keyword("even".into())),
                proto::Condition {
                    condition_one_of: Some(ConditionOneOf::Field(proto::FieldCondition {
                        key: "n".into(),
                        range: Some(proto::Range {
                            gte: Some(10.0),
                            lt: Some(20.0),
                            ..Default::default()
                        }),
                        ..Default::default()
                    })),
                },
            ],
            must_not: vec![field(
                "tag",
                MatchValue::Keywords(proto::RepeatedStrings {
                    strings: vec!["a".into(), "b".into()],
                }),
            )],
            ..Default::default()
        };
        let rest: qdrant_edge::Filter = serde_json::from_value(json!({
            "must": [
                {"key": "kind", "match": {"value": "even"}},
                {"key": "n", "range": {"gte": 10.0, "lt": 20.0}}
            ],
            "must_not": [{"key": "tag", "match": {"any": ["a", "b"]}}]
        }))
        .unwrap();
        assert_eq!(filter(grpc).unwrap(), rest);
    }

    #[test]
    fn empty_parts_are_refused_and_an_empty_filter_is_none() {
        let empty_condition = proto::Filter {
            must: vec![proto::Condition {
                condition_one_of: None,
            }],
            ..Default::default()
        };
        assert!(filter(empty_condition).is_err());
        assert!(
            optional_filter(Some(proto::Filter::default()))
                .unwrap()
                .is_none()
        );
    }
}
