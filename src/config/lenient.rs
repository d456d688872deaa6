//! Serde helpers for the config's values. Environment variables are read as
//! YAML scalars, so `12345` arrives as a number where a string is meant and a list
//! arrives as one string; these read any scalar as the type the key wants, a
//! separated string as a list, and an empty section (YAML's null) as no section.

use std::path::PathBuf;

use serde::{Deserialize, Deserializer};
use serde_json::Value;

fn scalar_to_string(value: Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// A section left empty (`service:` with only comments under it) is YAML's null:
/// the same as no section.
pub(super) fn null_as_default<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

pub(super) fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(scalar_to_string(Value::deserialize(d)?))
}

pub(super) fn lenient_path<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
    Ok(scalar_to_string(Value::deserialize(d)?).map(PathBuf::from))
}

/// A list of paths: a YAML list, or one string of `:`-separated paths (as an
/// environment variable gives it).
pub(super) fn path_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<PathBuf>>, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                scalar_to_string(item)
                    .map(PathBuf::from)
                    .ok_or_else(|| D::Error::custom("expected a list of paths"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Ok(scalar_to_string(other).map(|text| {
            text.split(':')
                .filter(|p| !p.is_empty())
                .map(PathBuf::from)
                .collect()
        })),
    }
}

/// A list of strings: a YAML list, or one comma-separated string (as an
/// environment variable gives it; an empty string is an empty list).
pub(super) fn string_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<String>>, D::Error> {
    use serde::de::Error;
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Array(items) => items
            .into_iter()
            .map(|item| {
                scalar_to_string(item).ok_or_else(|| D::Error::custom("expected a list of strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        other => Ok(scalar_to_string(other).map(|text| {
            if text.trim() == "[]" {
                return Vec::new();
            }
            text.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()
        })),
    }
}

pub(super) fn lenient_number<'de, D: Deserializer<'de>, T: std::str::FromStr>(
    d: D,
) -> Result<Option<T>, D::Error> {
    use serde::de::Error;
    match scalar_to_string(Value::deserialize(d)?) {
        None => Ok(None),
        Some(s) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("expected a number, got {s:?}"))),
    }
}

pub(super) fn lenient_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    lenient_number(d)
}
