//! The shape of a service message: a small subset of JSON Schema, checked by hand.
//!
//! A service declares, for each message type, the shape of its request and reply data, so a
//! caller can refuse bad data before sending it and a provider before its handler sees it. The
//! subset is what such declarations need and no more (a full JSON Schema validator would cost
//! the web app more than the rest of this module):
//!
//! - `{"type": "object", "properties": {…}, "required": […], "additionalProperties": false}`
//! - `{"type": "array", "items": {…}, "maxItems": n}`
//! - `{"type": "string", "maxLength": n, "enum": […]}`
//! - `{"type": "integer" | "number", "minimum": x, "maximum": y}`
//! - `{"type": "boolean"}`, `{"type": "null"}`, `{}` (anything)
//!
//! Unknown keywords are refused when a shape is read (a typo must not silently accept
//! everything); shapes are bounded in depth and size, so a peer's descriptor cannot make a
//! check expensive.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Nesting depth of a shape at most.
pub const MAX_DEPTH: usize = 8;
/// Properties, enum values or nested shapes in one shape at most (all levels together).
pub const MAX_NODES: usize = 256;

/// A declared shape.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(try_from = "Value", into = "Value")]
pub struct Shape {
    kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Default)]
enum Kind {
    #[default]
    Any,
    Null,
    Boolean,
    Integer {
        minimum: Option<f64>,
        maximum: Option<f64>,
    },
    Number {
        minimum: Option<f64>,
        maximum: Option<f64>,
    },
    String {
        max_length: Option<usize>,
        one_of: Option<Vec<String>>,
    },
    Array {
        items: Box<Shape>,
        max_items: Option<usize>,
    },
    Object {
        properties: BTreeMap<String, Shape>,
        required: Vec<String>,
        additional: bool,
    },
}

/// Why a shape declaration is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad shape at {path}: {problem}")]
pub struct ShapeError {
    /// Where, as a JSON pointer into the shape.
    pub path: String,
    /// What is wrong.
    pub problem: String,
}

/// Why a value does not have the declared shape. The text is what the caller sees.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{at}: {problem}", at = if path.is_empty() { "the data" } else { path.as_str() })]
pub struct Mismatch {
    /// Where, as a JSON pointer into the value (`/exponent`, `/items/2`).
    pub path: String,
    /// What was expected and what came.
    pub problem: String,
}

impl Shape {
    /// Anything at all.
    pub fn any() -> Self {
        Self::default()
    }

    /// Reads a declaration (JSON Schema subset).
    pub fn parse(value: &Value) -> Result<Self, ShapeError> {
        let mut nodes = 0;
        parse(value, "", 0, &mut nodes)
    }

    /// Whether this shape accepts anything.
    pub fn is_any(&self) -> bool {
        self.kind == Kind::Any
    }

    /// Checks `value` against the shape.
    pub fn check(&self, value: &Value) -> Result<(), Mismatch> {
        check(self, value, &mut String::new())
    }

    /// The declaration as JSON.
    pub fn to_json(&self) -> Value {
        Value::from(self.clone())
    }

    /// A small value of this shape, to start a call form with: required fields only, the
    /// lowest allowed number, the first allowed string.
    pub fn example(&self) -> Value {
        match &self.kind {
            Kind::Any | Kind::Null => Value::Null,
            Kind::Boolean => Value::Bool(false),
            Kind::Integer { minimum, maximum } => {
                let x = minimum
                    .map_or(0.0, f64::ceil)
                    .min(maximum.map_or(f64::MAX, f64::floor));
                number(x)
            }
            Kind::Number { minimum, maximum } => {
                number(minimum.unwrap_or(0.0).min(maximum.unwrap_or(f64::MAX)))
            }
            Kind::String { one_of, max_length } => Value::String(
                one_of
                    .iter()
                    .flatten()
                    .find(|v| fits_length(v, *max_length))
                    .cloned()
                    .unwrap_or_default(),
            ),
            Kind::Array { .. } => Value::Array(Vec::new()),
            Kind::Object {
                properties,
                required,
                ..
            } => Value::Object(crate::map_from(required.iter().map(|name| {
                let example = properties.get(name).map_or(Value::Null, Shape::example);
                (name.clone(), example)
            }))),
        }
    }
}

impl TryFrom<Value> for Shape {
    type Error = ShapeError;
    fn try_from(value: Value) -> Result<Self, ShapeError> {
        Shape::parse(&value)
    }
}

impl From<Shape> for Value {
    fn from(shape: Shape) -> Value {
        let mut out = serde_json::Map::new();
        let mut set = |k: &str, v: Value| {
            out.insert(k.to_owned(), v);
        };
        match shape.kind {
            Kind::Any => {}
            Kind::Null => set("type", "null".into()),
            Kind::Boolean => set("type", "boolean".into()),
            Kind::Integer { minimum, maximum } | Kind::Number { minimum, maximum } => {
                let integer = matches!(shape.kind, Kind::Integer { .. });
                set("type", if integer { "integer" } else { "number" }.into());
                if let Some(m) = minimum {
                    set("minimum", number(m));
                }
                if let Some(m) = maximum {
                    set("maximum", number(m));
                }
            }
            Kind::String { max_length, one_of } => {
                set("type", "string".into());
                if let Some(n) = max_length {
                    set("maxLength", n.into());
                }
                if let Some(values) = one_of {
                    set("enum", values.into());
                }
            }
            Kind::Array { items, max_items } => {
                set("type", "array".into());
                if !items.is_any() {
                    set("items", Value::from(*items));
                }
                if let Some(n) = max_items {
                    set("maxItems", n.into());
                }
            }
            Kind::Object {
                properties,
                required,
                additional,
            } => {
                set("type", "object".into());
                if !properties.is_empty() {
                    let props =
                        crate::map_from(properties.into_iter().map(|(k, v)| (k, Value::from(v))));
                    set("properties", Value::Object(props));
                }
                if !required.is_empty() {
                    set("required", required.into());
                }
                if !additional {
                    set("additionalProperties", false.into());
                }
            }
        }
        Value::Object(out)
    }
}

/// A bound as JSON: integral values as integers, so `{"minimum": 2}` round-trips as written.
/// The largest integer bound: integers past it do not survive JavaScript's numbers (2^53 - 1).
pub const MAX_INTEGER_BOUND: f64 = 9_007_199_254_740_991.0;

/// Why no value has this shape, if none has: such a declaration is a mistake, refused when read
/// (so that every shape has an [`Shape::example`] that fits it).
fn unsatisfiable(kind: &Kind) -> Option<String> {
    match kind {
        Kind::Integer { minimum, maximum } => {
            if let Some(bound) = [minimum, maximum]
                .into_iter()
                .flatten()
                .find(|b| b.abs() > MAX_INTEGER_BOUND)
            {
                return Some(format!(
                    "integer bound {bound} is beyond {MAX_INTEGER_BOUND} (2^53 - 1)"
                ));
            }
            let (lo, hi) = (minimum.map(f64::ceil), maximum.map(f64::floor));
            match (lo, hi) {
                (Some(lo), Some(hi)) if lo > hi => Some(format!(
                    "no integer lies between minimum {} and maximum {}",
                    minimum.unwrap_or(lo),
                    maximum.unwrap_or(hi)
                )),
                _ => None,
            }
        }
        Kind::Number {
            minimum: Some(lo),
            maximum: Some(hi),
        } if lo > hi => Some(format!("minimum {lo} is above maximum {hi}")),
        Kind::String {
            one_of: Some(values),
            max_length,
        } if !values.iter().any(|v| fits_length(v, *max_length)) => Some(if values.is_empty() {
            "\"enum\" lists no value".to_owned()
        } else {
            "no value of \"enum\" is within \"maxLength\"".to_owned()
        }),
        Kind::Object {
            properties,
            required,
            additional: false,
        } => required
            .iter()
            .find(|name| !properties.contains_key(*name))
            .map(|name| {
                format!(
                    "required property \"{name}\" is not among the properties, and \
                     \"additionalProperties\" is false"
                )
            }),
        _ => None,
    }
}

fn fits_length(value: &str, max_length: Option<usize>) -> bool {
    max_length.is_none_or(|max| value.chars().count() <= max)
}

fn number(x: f64) -> Value {
    if x.fract() == 0.0 && x.abs() < 9.0e15 {
        Value::from(x as i64)
    } else {
        serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
    }
}

fn bad(path: &str, problem: impl Into<String>) -> ShapeError {
    ShapeError {
        path: if path.is_empty() {
            "/".to_owned()
        } else {
            path.to_owned()
        },
        problem: problem.into(),
    }
}

fn parse(value: &Value, path: &str, depth: usize, nodes: &mut usize) -> Result<Shape, ShapeError> {
    *nodes += 1;
    if *nodes > MAX_NODES {
        return Err(bad(path, format!("more than {MAX_NODES} parts")));
    }
    if depth > MAX_DEPTH {
        return Err(bad(path, format!("nested deeper than {MAX_DEPTH}")));
    }
    let Value::Object(map) = value else {
        return Err(bad(path, "a shape is a JSON object"));
    };
    let kind = match map.get("type") {
        None => "any",
        Some(Value::String(t)) => t.as_str(),
        Some(_) => return Err(bad(path, "\"type\" must be a string")),
    };
    let allowed: &[&str] = match kind {
        "any" => &[],
        "null" | "boolean" => &["type"],
        "integer" | "number" => &["type", "minimum", "maximum"],
        "string" => &["type", "maxLength", "enum"],
        "array" => &["type", "items", "maxItems"],
        "object" => &["type", "properties", "required", "additionalProperties"],
        other => {
            return Err(bad(
                path,
                format!(
                    "unknown type \"{other}\" (object, array, string, integer, number, boolean, null)"
                ),
            ));
        }
    };
    // Descriptions are welcome everywhere and ignored.
    if let Some(key) = map
        .keys()
        .find(|k| !allowed.contains(&k.as_str()) && *k != "description" && *k != "title")
    {
        return Err(bad(path, format!("unsupported keyword \"{key}\"")));
    }
    let count = |key: &str| -> Result<Option<usize>, ShapeError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| bad(path, format!("\"{key}\" must be a whole number"))),
        }
    };
    let bound = |key: &str| -> Result<Option<f64>, ShapeError> {
        match map.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(Some)
                .ok_or_else(|| bad(path, format!("\"{key}\" must be a number"))),
        }
    };
    let kind = match kind {
        "any" => Kind::Any,
        "null" => Kind::Null,
        "boolean" => Kind::Boolean,
        "integer" => Kind::Integer {
            minimum: bound("minimum")?,
            maximum: bound("maximum")?,
        },
        "number" => Kind::Number {
            minimum: bound("minimum")?,
            maximum: bound("maximum")?,
        },
        "string" => {
            let one_of = match map.get("enum") {
                None => None,
                Some(Value::Array(values)) => {
                    *nodes += values.len();
                    let strings: Option<Vec<String>> = values
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    Some(strings.ok_or_else(|| bad(path, "\"enum\" lists strings"))?)
                }
                Some(_) => return Err(bad(path, "\"enum\" must be an array")),
            };
            Kind::String {
                max_length: count("maxLength")?,
                one_of,
            }
        }
        "array" => Kind::Array {
            items: Box::new(match map.get("items") {
                None => Shape::any(),
                Some(items) => parse(items, &format!("{path}/items"), depth + 1, nodes)?,
            }),
            max_items: count("maxItems")?,
        },
        _ => {
            let mut properties = BTreeMap::new();
            match map.get("properties") {
                None => {}
                Some(Value::Object(props)) => {
                    for (name, shape) in props {
                        let at = format!("{path}/properties/{name}");
                        properties.insert(name.clone(), parse(shape, &at, depth + 1, nodes)?);
                    }
                }
                Some(_) => return Err(bad(path, "\"properties\" must be an object")),
            }
            let required = match map.get("required") {
                None => Vec::new(),
                Some(Value::Array(names)) => {
                    *nodes += names.len();
                    let names: Option<Vec<String>> = names
                        .iter()
                        .map(|v| v.as_str().map(str::to_owned))
                        .collect();
                    names.ok_or_else(|| bad(path, "\"required\" lists property names"))?
                }
                Some(_) => return Err(bad(path, "\"required\" must be an array")),
            };
            let additional = match map.get("additionalProperties") {
                None => true,
                Some(Value::Bool(b)) => *b,
                Some(_) => return Err(bad(path, "\"additionalProperties\" must be true or false")),
            };
            Kind::Object {
                properties,
                required,
                additional,
            }
        }
    };
    if let Some(problem) = unsatisfiable(&kind) {
        return Err(bad(path, problem));
    }
    Ok(Shape { kind })
}

/// A short description of a JSON value for error messages.
struct Brief<'a>(&'a Value);

impl fmt::Display for Brief<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Number(n) => write!(f, "{n}"),
            Value::String(s) if s.chars().count() <= 24 => write!(f, "{s:?}"),
            Value::String(s) => write!(f, "a string of {} characters", s.chars().count()),
            Value::Array(a) => write!(f, "an array of {}", a.len()),
            Value::Object(_) => f.write_str("an object"),
        }
    }
}

fn mismatch(path: &str, problem: String) -> Mismatch {
    Mismatch {
        path: path.to_owned(),
        problem,
    }
}

fn within(x: f64, minimum: Option<f64>, maximum: Option<f64>) -> Option<String> {
    match (minimum, maximum) {
        (Some(lo), _) if x < lo => Some(format!("at least {lo}")),
        (_, Some(hi)) if x > hi => Some(format!("at most {hi}")),
        _ => None,
    }
}

fn check(shape: &Shape, value: &Value, path: &mut String) -> Result<(), Mismatch> {
    let got = |what: &str| mismatch(path, format!("expected {what}, got {}", Brief(value)));
    match (&shape.kind, value) {
        (Kind::Any, _) | (Kind::Null, Value::Null) | (Kind::Boolean, Value::Bool(_)) => Ok(()),
        (Kind::Integer { minimum, maximum }, Value::Number(n)) => {
            let Some(x) = n
                .as_i64()
                .map(|i| i as f64)
                .or(n.as_u64().map(|u| u as f64))
            else {
                return Err(got("an integer"));
            };
            match within(x, *minimum, *maximum) {
                Some(bound) => Err(mismatch(path, format!("{x} is not {bound}"))),
                None => Ok(()),
            }
        }
        (Kind::Number { minimum, maximum }, Value::Number(n)) => {
            let x = n.as_f64().unwrap_or(f64::NAN);
            match within(x, *minimum, *maximum) {
                Some(bound) => Err(mismatch(path, format!("{x} is not {bound}"))),
                None => Ok(()),
            }
        }
        (Kind::String { max_length, one_of }, Value::String(s)) => {
            if let Some(max) = max_length
                && s.chars().count() > *max
            {
                return Err(mismatch(
                    path,
                    format!("{} characters, at most {max} allowed", s.chars().count()),
                ));
            }
            if let Some(values) = one_of
                && !values.contains(s)
            {
                return Err(mismatch(
                    path,
                    format!("{s:?} is not one of {}", values.join(", ")),
                ));
            }
            Ok(())
        }
        (Kind::Array { items, max_items }, Value::Array(values)) => {
            if let Some(max) = max_items
                && values.len() > *max
            {
                return Err(mismatch(
                    path,
                    format!("{} items, at most {max} allowed", values.len()),
                ));
            }
            for (i, item) in values.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                check(items, item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        (
            Kind::Object {
                properties,
                required,
                additional,
            },
            Value::Object(map),
        ) => {
            if let Some(missing) = required.iter().find(|name| !map.contains_key(*name)) {
                return Err(mismatch(path, format!("\"{missing}\" is missing")));
            }
            for (name, item) in map {
                let len = path.len();
                path.push('/');
                path.push_str(name);
                match properties.get(name) {
                    Some(shape) => check(shape, item, path)?,
                    None if !additional => {
                        return Err(mismatch(path, "is not an expected field".to_owned()));
                    }
                    None => {}
                }
                path.truncate(len);
            }
            Ok(())
        }
        (Kind::Null, _) => Err(got("null")),
        (Kind::Boolean, _) => Err(got("true or false")),
        (Kind::Integer { .. }, _) => Err(got("an integer")),
        (Kind::Number { .. }, _) => Err(got("a number")),
        (Kind::String { .. }, _) => Err(got("a string")),
        (Kind::Array { .. }, _) => Err(got("an array")),
        (Kind::Object { .. }, _) => Err(got("an object")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shape(v: Value) -> Shape {
        Shape::parse(&v).expect("valid shape")
    }

    #[test]
    fn objects_check_required_fields_types_and_bounds_with_a_path() {
        let s = shape(json!({
            "type": "object",
            "properties": {
                "exponent": {"type": "integer", "minimum": 2, "maximum": 100000},
                "note": {"type": "string", "maxLength": 5}
            },
            "required": ["exponent"],
            "additionalProperties": false
        }));
        assert!(s.check(&json!({"exponent": 127})).is_ok());
        assert!(s.check(&json!({"exponent": 127, "note": "hi"})).is_ok());
        let e = s.check(&json!({})).unwrap_err();
        assert_eq!(e.to_string(), "the data: \"exponent\" is missing");
        let e = s.check(&json!({"exponent": "127"})).unwrap_err();
        assert_eq!(e.to_string(), "/exponent: expected an integer, got \"127\"");
        let e = s.check(&json!({"exponent": 1})).unwrap_err();
        assert_eq!(e.to_string(), "/exponent: 1 is not at least 2");
        let e = s.check(&json!({"exponent": 2.5})).unwrap_err();
        assert!(e.to_string().contains("expected an integer"), "{e}");
        let e = s.check(&json!({"exponent": 7, "extra": 1})).unwrap_err();
        assert_eq!(e.to_string(), "/extra: is not an expected field");
        let e = s
            .check(&json!({"exponent": 7, "note": "too long"}))
            .unwrap_err();
        assert!(e.to_string().contains("at most 5"), "{e}");
        assert!(
            s.check(&json!([1]))
                .unwrap_err()
                .to_string()
                .contains("expected an object")
        );
    }

    #[test]
    fn arrays_strings_and_anything() {
        let s = shape(
            json!({"type": "array", "items": {"type": "string", "enum": ["a", "b"]}, "maxItems": 2}),
        );
        assert!(s.check(&json!(["a", "b"])).is_ok());
        assert_eq!(
            s.check(&json!(["a", "c"])).unwrap_err().to_string(),
            "/1: \"c\" is not one of a, b"
        );
        assert!(
            s.check(&json!(["a", "a", "a"]))
                .unwrap_err()
                .to_string()
                .contains("3 items")
        );
        let any = shape(json!({}));
        assert!(any.is_any() && any.check(&json!({"x": [1, null]})).is_ok());
        assert!(shape(json!({"type": "null"})).check(&json!(null)).is_ok());
        assert!(shape(json!({"type": "boolean"})).check(&json!(1)).is_err());
        assert!(
            shape(json!({"type": "number", "maximum": 1.5}))
                .check(&json!(1.6))
                .is_err()
        );
    }

    #[test]
    fn declarations_with_typos_unknown_types_or_too_much_nesting_are_refused() {
        let typo = Shape::parse(&json!({"type": "object", "propertys": {}})).unwrap_err();
        assert!(
            typo.to_string()
                .contains("unsupported keyword \"propertys\""),
            "{typo}"
        );
        assert!(Shape::parse(&json!({"type": "date"})).is_err());
        assert!(Shape::parse(&json!("string")).is_err());
        assert!(Shape::parse(&json!({"type": "string", "maxLength": -1})).is_err());
        let mut deep = json!({"type": "string"});
        for _ in 0..=MAX_DEPTH {
            deep = json!({"type": "array", "items": deep});
        }
        assert!(
            Shape::parse(&deep)
                .unwrap_err()
                .to_string()
                .contains("deeper")
        );
        let many: serde_json::Map<String, Value> = (0..MAX_NODES)
            .map(|i| (format!("p{i}"), json!({})))
            .collect();
        assert!(Shape::parse(&json!({"type": "object", "properties": many})).is_err());
        // Descriptions are allowed and ignored.
        assert!(Shape::parse(&json!({"type": "integer", "description": "p in 2^p - 1"})).is_ok());
    }

    #[test]
    fn examples_have_the_shape_they_come_from() {
        let s = shape(json!({
            "type": "object",
            "properties": {
                "exponent": {"type": "integer", "minimum": 2, "maximum": 100},
                "mode": {"type": "string", "enum": ["fast", "slow"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "note": {"type": "string"}
            },
            "required": ["exponent", "mode", "tags"],
            "additionalProperties": false
        }));
        let example = s.example();
        assert_eq!(example, json!({"exponent": 2, "mode": "fast", "tags": []}));
        assert!(s.check(&example).is_ok());
        assert_eq!(shape(json!({})).example(), json!(null));
        let n = shape(json!({"type": "number", "minimum": 0.5}));
        assert!(n.check(&n.example()).is_ok());
    }

    #[test]
    fn shapes_no_value_fits_are_refused_and_every_example_fits() {
        // Found by fuzzing (service_shape): a declared shape no value fits, whose example then
        // failed its own check.
        for (declared, says) in [
            (
                json!({"type": "object", "required": ["q"], "additionalProperties": false}),
                "\"q\" is not among the properties",
            ),
            (
                json!({"type": "integer", "minimum": 1.2, "maximum": 1.8}),
                "no integer lies between minimum 1.2 and maximum 1.8",
            ),
            (json!({"type": "integer", "minimum": 1e20}), "beyond"),
            (
                json!({"type": "number", "minimum": 2, "maximum": 1}),
                "above maximum",
            ),
            (json!({"type": "string", "enum": []}), "lists no value"),
            (
                json!({"type": "string", "enum": ["long"], "maxLength": 2}),
                "within \"maxLength\"",
            ),
        ] {
            let error = Shape::parse(&declared).unwrap_err().to_string();
            assert!(error.contains(says), "{declared}: {error}");
        }
        for declared in [
            json!({"type": "integer", "maximum": -5.5}),
            json!({"type": "integer", "minimum": -3, "maximum": -3}),
            json!({"type": "string", "enum": ["long", "ok"], "maxLength": 2}),
            json!({"type": "object", "required": ["q"]}),
            json!({"type": "number", "maximum": -0.5}),
        ] {
            let s = shape(declared.clone());
            assert!(s.check(&s.example()).is_ok(), "{declared}: {}", s.example());
        }
    }

    #[test]
    fn shapes_round_trip_through_json() {
        let declared = json!({
            "type": "object",
            "properties": {"exponent": {"type": "integer", "minimum": 2}},
            "required": ["exponent"]
        });
        let s = shape(declared.clone());
        assert_eq!(s.to_json(), declared);
        let text = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<Shape>(&text).unwrap(), s);
    }
}
