//! Reads an item into a serde type straight from the SDK's attribute
//! values. `serde_dynamo::from_item` first rebuilds the whole item in its
//! own attribute type: for 1000 request records, reading them this way took
//! the item → page event → JSON conversion from about 23 ms to 7 (with
//! libdeflate; docs/KEY-DESIGN.md). Strings are moved out of the item, not
//! copied.
//!
//! Event items hold strings, booleans, a map of strings (`indexedData`),
//! the TTL number and `data` as bytes. It is never looser than serde_dynamo
//! (a property test holds it): a string field takes only a string
//! attribute, a boolean only a boolean, and only `NULL: true` is absent.
//! Numbers read as a whole number when they are one, else as a float.
//! Items whose `data` is not binary (written before it was deflated) are
//! read by serde_dynamo instead.

use std::collections::HashMap;
use std::fmt;

use aws_sdk_dynamodb::types::AttributeValue;
use serde::de::value::{MapDeserializer, SeqDeserializer};
use serde::de::{self, DeserializeOwned, IntoDeserializer, Visitor};

#[derive(Debug)]
pub struct Error(String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

/// `T` read from the item's attributes. (The item type is spelled out, not
/// `items::Item`, so that `items` can use this module without a cycle.)
pub fn from_item<T: DeserializeOwned>(item: HashMap<String, AttributeValue>) -> Result<T, Error> {
    T::deserialize(Attribute(AttributeValue::M(item)))
}

/// One attribute value as a serde deserializer.
struct Attribute(AttributeValue);

impl<'de> IntoDeserializer<'de, Error> for Attribute {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

fn number<'de, V: Visitor<'de>>(text: &str, visitor: V) -> Result<V::Value, Error> {
    if let Ok(whole) = text.parse::<u64>() {
        visitor.visit_u64(whole)
    } else if let Ok(whole) = text.parse::<i64>() {
        visitor.visit_i64(whole)
    } else if let Ok(float) = text.parse::<f64>() {
        visitor.visit_f64(float)
    } else {
        Err(de::Error::custom(format!("`{text}` is not a number")))
    }
}

impl<'de> de::Deserializer<'de> for Attribute {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            AttributeValue::S(text) => visitor.visit_string(text),
            AttributeValue::Bool(flag) => visitor.visit_bool(flag),
            AttributeValue::Null(_) => visitor.visit_unit(),
            AttributeValue::N(text) => number(&text, visitor),
            AttributeValue::B(bytes) => visitor.visit_byte_buf(bytes.into_inner()),
            AttributeValue::M(map) => {
                let mut entries =
                    MapDeserializer::new(map.into_iter().map(|(k, v)| (k, Attribute(v))));
                let value = visitor.visit_map(&mut entries)?;
                entries.end()?;
                Ok(value)
            }
            AttributeValue::L(list) => {
                let mut elements = SeqDeserializer::new(list.into_iter().map(Attribute));
                let value = visitor.visit_seq(&mut elements)?;
                elements.end()?;
                Ok(value)
            }
            AttributeValue::Ss(texts) => {
                let mut elements = SeqDeserializer::new(texts.into_iter());
                let value = visitor.visit_seq(&mut elements)?;
                elements.end()?;
                Ok(value)
            }
            AttributeValue::Ns(numbers) => {
                let mut elements = SeqDeserializer::new(
                    numbers.into_iter().map(|n| Attribute(AttributeValue::N(n))),
                );
                let value = visitor.visit_seq(&mut elements)?;
                elements.end()?;
                Ok(value)
            }
            other => Err(de::Error::custom(format!(
                "an attribute of an unexpected type: {other:?}"
            ))),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            AttributeValue::Null(true) => visitor.visit_none(),
            other => visitor.visit_some(Attribute(other)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            AttributeValue::S(text) => visitor.visit_string(text),
            other => Err(de::Error::custom(format!(
                "expected a string attribute, found {other:?}"
            ))),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_string(visitor)
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.0 {
            AttributeValue::Bool(flag) => visitor.visit_bool(flag),
            other => Err(de::Error::custom(format!(
                "expected a boolean attribute, found {other:?}"
            ))),
        }
    }

    /// Attributes the type does not name (the TTL, the index keys) are
    /// dropped unread.
    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char
        bytes byte_buf unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier
    }
}
