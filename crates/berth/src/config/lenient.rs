//! Reading configuration values the way distribution's Go YAML does: the
//! type of the key decides how a scalar is read. A string key takes `5300`
//! as text (an environment override is always text), a number key takes
//! `"5300"`, and a boolean key takes YAML 1.1's `yes`/`no`/`on`/`off` as well
//! as `true`/`false`. Errors are rewritten so that no Rust type name reaches
//! the user.

use serde::de::{self, DeserializeSeed, Deserializer, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// A configuration value whose scalars bend to the key's type.
pub struct Lenient(pub Value);

type Error = serde_json::Error;

/// YAML 1.1 booleans, as Go's yaml.v2 resolves them.
pub fn yaml11_bool(s: &str) -> Option<bool> {
    match s.trim() {
        "y" | "Y" | "yes" | "Yes" | "YES" | "true" | "True" | "TRUE" | "on" | "On" | "ON" => Some(true),
        "n" | "N" | "no" | "No" | "NO" | "false" | "False" | "FALSE" | "off" | "Off" | "OFF" => Some(false),
        _ => None,
    }
}

fn unexpected(v: &Value) -> de::Unexpected<'_> {
    match v {
        Value::Null => de::Unexpected::Other("nothing"),
        Value::Bool(b) => de::Unexpected::Bool(*b),
        Value::Number(_) => de::Unexpected::Other("a number"),
        Value::String(s) => de::Unexpected::Str(s),
        Value::Array(_) => de::Unexpected::Seq,
        Value::Object(_) => de::Unexpected::Map,
    }
}

macro_rules! number {
    ($method:ident, $visit:ident, $t:ty) => {
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::String(s) => match s.trim().parse::<$t>() {
                    Ok(n) => visitor.$visit(n),
                    Err(_) => Err(de::Error::invalid_type(de::Unexpected::Str(&s), &visitor)),
                },
                other => Lenient(other).deserialize_any(visitor),
            }
        }
    };
}

impl<'de> Deserializer<'de> for Lenient {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_unit(),
            Value::Bool(b) => visitor.visit_bool(b),
            Value::Number(n) => n.deserialize_any(visitor),
            Value::String(s) => visitor.visit_string(s),
            Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
            Value::Object(m) => visitor.visit_map(Entries { iter: m.into_iter(), value: None }),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match &self.0 {
            Value::String(s) => match yaml11_bool(s) {
                Some(b) => visitor.visit_bool(b),
                None => Err(de::Error::invalid_type(unexpected(&self.0), &visitor)),
            },
            Value::Bool(b) => visitor.visit_bool(*b),
            other => Err(de::Error::invalid_type(unexpected(other), &visitor)),
        }
    }

    number!(deserialize_u8, visit_u8, u8);
    number!(deserialize_u16, visit_u16, u16);
    number!(deserialize_u32, visit_u32, u32);
    number!(deserialize_u64, visit_u64, u64);
    number!(deserialize_i8, visit_i8, i8);
    number!(deserialize_i16, visit_i16, i16);
    number!(deserialize_i32, visit_i32, i32);
    number!(deserialize_i64, visit_i64, i64);
    number!(deserialize_f32, visit_f32, f32);
    number!(deserialize_f64, visit_f64, f64);

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Number(n) => visitor.visit_string(n.to_string()),
            Value::Bool(b) => visitor.visit_string(b.to_string()),
            Value::String(s) => visitor.visit_string(s),
            other => Err(de::Error::invalid_type(unexpected(&other), &visitor)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            Value::Null => visitor.visit_none(),
            other => visitor.visit_some(Lenient(other)),
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(self, _name: &'static str, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            Value::String(s) => visitor.visit_enum(s.into_deserializer()),
            other => other.deserialize_enum(name, variants, visitor),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        match self.0 {
            // An empty section (`storage:\n  inmemory:`) is a section with no keys.
            Value::Null => visitor.visit_map(Entries { iter: Map::new().into_iter(), value: None }),
            Value::Object(m) => visitor.visit_map(Entries { iter: m.into_iter(), value: None }),
            other => Err(de::Error::invalid_type(unexpected(&other), &visitor)),
        }
    }

    serde::forward_to_deserialize_any! {
        char bytes byte_buf unit unit_struct seq tuple tuple_struct map identifier ignored_any
    }
}

struct Seq(std::vec::IntoIter<Value>);

impl<'de> SeqAccess<'de> for Seq {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>, Error> {
        self.0.next().map(|v| seed.deserialize(Lenient(v))).transpose()
    }
}

struct Entries {
    iter: serde_json::map::IntoIter,
    value: Option<Value>,
}

impl<'de> MapAccess<'de> for Entries {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, Error> {
        match self.iter.next() {
            Some((k, v)) => {
                self.value = Some(v);
                seed.deserialize(Lenient(Value::String(k))).map(Some)
            }
            None => Ok(None),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(Lenient(self.value.take().unwrap_or(Value::Null)))
    }
}

/// Reads a YAML text into `T` as the configuration is read (tests and sections).
#[cfg(test)]
pub fn from_yaml<T: serde::de::DeserializeOwned>(yaml: &str) -> Result<T, String> {
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(yaml).map_err(|e| e.to_string())?;
    let json = serde_json::to_value(v).map_err(|e| e.to_string())?;
    T::deserialize(Lenient(json)).map_err(|e| plain_message(&e.to_string()))
}

/// A serde message in the words of the configuration: no Rust type names
/// (`struct FilesystemConfig`, `untagged enum Raw`, `u64`).
pub fn plain_message(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(|c: char| c.is_ascii_alphabetic()) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let word_end = rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(rest.len());
        let word = &rest[..word_end];
        let after = &rest[word_end..];
        let next_ident = || {
            let t = after.strip_prefix(' ')?;
            let end = t.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(t.len());
            let ident = &t[..end];
            ident.starts_with(|c: char| c.is_ascii_uppercase()).then_some((ident, 1 + end))
        };
        let replaced: Option<(&str, usize)> = match word {
            "struct" => next_ident().map(|(_, n)| ("a mapping of keys", n)),
            "enum" => next_ident().map(|(_, n)| ("one of the documented values", n)),
            "u8" | "u16" | "u32" | "u64" | "usize" => Some(("a non-negative whole number", 0)),
            "i8" | "i16" | "i32" | "i64" | "isize" => Some(("a whole number", 0)),
            "f32" | "f64" => Some(("a number", 0)),
            _ => None,
        };
        match replaced {
            Some((text, skip)) => {
                // "untagged enum Raw" and "a mapping" read badly after "an"/"untagged".
                if out.ends_with("untagged ") {
                    out.truncate(out.len() - "untagged ".len());
                }
                out.push_str(text);
                rest = &after[skip..];
            }
            None => {
                out.push_str(word);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out.replace("data did not match any variant of one of the documented values", "a value of the wrong kind")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Sample {
        #[serde(default)]
        addr: String,
        #[serde(default)]
        enabled: bool,
        #[serde(default)]
        max: u64,
        #[serde(default)]
        maybe: Option<bool>,
        #[serde(default)]
        names: Vec<String>,
    }

    fn read(v: Value) -> Result<Sample, String> {
        Sample::deserialize(Lenient(v)).map_err(|e| plain_message(&e.to_string()))
    }

    #[test]
    fn scalars_bend_to_the_key_type() {
        let s =
            read(serde_json::json!({"addr": 5300, "enabled": "yes", "max": "20", "maybe": "off", "names": [1, true]}))
                .unwrap();
        assert_eq!(
            s,
            Sample {
                addr: "5300".into(),
                enabled: true,
                max: 20,
                maybe: Some(false),
                names: vec!["1".into(), "true".into()]
            }
        );
        for (word, want) in [("on", true), ("ON", true), ("y", true), ("No", false), ("FALSE", false)] {
            assert_eq!(read(serde_json::json!({"enabled": word})).unwrap().enabled, want, "{word}");
        }
        assert!(read(serde_json::json!({"enabled": "maybe"})).is_err());
        assert!(read(serde_json::json!({"max": "-1"})).is_err());
    }

    #[test]
    fn messages_carry_no_type_names() {
        let e = read(serde_json::json!("text")).unwrap_err();
        assert_eq!(e, "invalid type: string \"text\", expected a mapping of keys");
        let e = read(serde_json::json!({"max": "lots"})).unwrap_err();
        assert!(e.contains("expected a non-negative whole number"), "{e}");
        assert_eq!(plain_message("data did not match any variant of untagged enum Raw"), "a value of the wrong kind");
        assert_eq!(
            plain_message("invalid type: map, expected u32"),
            "invalid type: map, expected a non-negative whole number"
        );
    }
}
