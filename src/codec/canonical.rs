//! Avro schema fingerprints as the specification defines them: CRC-64-AVRO
//! (Rabin) of the schema's Parsing Canonical Form (PCF), the 8 bytes that a
//! single-object encoded value carries after `C3 01`.
//!
//! Why not apache-avro's `Schema::fingerprint`: apache-avro (Rust, 0.21, and
//! 0.23.0-rc0 alike) mishandles `logicalType` in the canonical form it builds
//! (AVRO-4004, <https://github.com/apache/avro/pull/2976>, still open). It
//! drops the attribute but keeps the object around the primitive, so the
//! tick's `{"type": "long", "logicalType": "timestamp-micros"}` becomes
//! `{"type":"long"}` instead of `"long"` (the PRIMITIVES rule). For any schema
//! with a logical type on a primitive, its PCF and fingerprint differ from the
//! specification's, and from what the Java
//! (`SchemaNormalization.parsingFingerprint64`), Python and other libraries
//! compute. The functions here follow the specification ("Transforming into
//! Parsing Canonical Form"), and the tests pin their output to what Apache
//! Avro for Java computes (`scripts/avro-interop/check.sh` reruns that check).
//!
//! The transformation works on the schema's JSON, in document order, which is
//! the order in which Avro parsers define names:
//! - PRIMITIVES: a primitive written as an object (with attributes such as
//!   `logicalType`) becomes its name, `"long"`;
//! - FULLNAMES: every name of a named type, defined or referred to, becomes
//!   its fullname (a reference is resolved as Java resolves it: in the
//!   enclosing namespace, else in the null namespace);
//! - STRIP and ORDER: named types keep `name`, `type` and then `fields`,
//!   `symbols` or `size`; arrays and maps `type` and `items` or `values`;
//!   fields `name` and `type` (`error` is written as `record`, as Java does);
//! - STRINGS, INTEGERS, WHITESPACE: strings are written unescaped where JSON
//!   allows it, sizes as plain decimal integers, and no whitespace.
//!
//! Schemas that Java refuses to parse (a `type` that is not a string in a
//! schema object, a quoted `size`, an unknown name) are [`InvalidSchema`].
//!
//! It never sees a tick: it works on schema JSON only.

use std::collections::HashSet;
use std::fmt::Write;

use serde_json::{Map, Value};

/// The schema JSON is not an Avro schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not an Avro schema: {0}")]
pub struct InvalidSchema(String);

/// The 8-byte fingerprint of `schema` that single-object encoding writes:
/// CRC-64-AVRO of its Parsing Canonical Form, little-endian.
pub fn fingerprint(schema: &Value) -> Result<[u8; 8], InvalidSchema> {
    let pcf = parsing_canonical_form(schema)?;
    Ok(crc64_avro(pcf.as_bytes()).to_le_bytes())
}

/// The Parsing Canonical Form of `schema`, per the Avro specification.
pub fn parsing_canonical_form(schema: &Value) -> Result<String, InvalidSchema> {
    let mut pcf = Pcf::default();
    pcf.schema(schema, "")?;
    Ok(pcf.out)
}

/// CRC-64-AVRO, the Rabin fingerprint of the Avro specification ("Schema
/// Fingerprints").
pub fn crc64_avro(bytes: &[u8]) -> u64 {
    bytes.iter().fold(CRC64_EMPTY, |fp, &b| {
        (fp >> 8) ^ CRC64_TABLE[((fp ^ u64::from(b)) & 0xFF) as usize]
    })
}

const CRC64_EMPTY: u64 = 0xC15D_213A_A4D7_A795;

const CRC64_TABLE: [u64; 256] = {
    let mut table = [0u64; 256];
    let mut i = 0;
    while i < 256 {
        let mut fp = i as u64;
        let mut j = 0;
        while j < 8 {
            fp = (fp >> 1) ^ (CRC64_EMPTY & (fp & 1).wrapping_neg());
            j += 1;
        }
        table[i] = fp;
        i += 1;
    }
    table
};

const PRIMITIVES: [&str; 8] = [
    "null", "boolean", "int", "long", "float", "double", "bytes", "string",
];

#[derive(Default)]
struct Pcf {
    out: String,
    /// Fullnames defined so far, to resolve references.
    defined: HashSet<String>,
}

fn invalid(what: &str, json: &impl std::fmt::Display) -> InvalidSchema {
    InvalidSchema(format!("{what}: {json}"))
}

impl Pcf {
    /// Appends the PCF of `schema`, found in namespace `ns` ("" for none).
    fn schema(&mut self, schema: &Value, ns: &str) -> Result<(), InvalidSchema> {
        match schema {
            Value::String(name) => self.reference(name, ns),
            Value::Array(branches) => {
                self.out.push('[');
                for (i, branch) in branches.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.schema(branch, ns)?;
                }
                self.out.push(']');
                Ok(())
            }
            Value::Object(obj) => match obj.get("type") {
                Some(Value::String(t)) => match t.as_str() {
                    "record" | "error" | "enum" | "fixed" => self.named(obj, t, ns),
                    "array" => self.container(obj, "array", "items", ns),
                    "map" => self.container(obj, "map", "values", ns),
                    p if PRIMITIVES.contains(&p) => self.reference(p, ns),
                    _ => Err(invalid("unknown type", schema)),
                },
                _ => Err(invalid("no type", schema)),
            },
            _ => Err(invalid("not a schema", schema)),
        }
    }

    /// A primitive type name, or a reference to a named type defined before.
    fn reference(&mut self, name: &str, ns: &str) -> Result<(), InvalidSchema> {
        let full = fullname(name, None, ns);
        if PRIMITIVES.contains(&name) {
            self.string(name);
        } else if self.defined.contains(&full) {
            self.string(&full);
        } else if self.defined.contains(name) {
            self.string(name);
        } else {
            return Err(invalid("unknown type", &Value::from(name)));
        }
        Ok(())
    }

    fn container(
        &mut self,
        obj: &Map<String, Value>,
        t: &str,
        key: &str,
        ns: &str,
    ) -> Result<(), InvalidSchema> {
        let inner = obj
            .get(key)
            .ok_or_else(|| invalid(&format!("{t} without {key}"), &Value::from(obj.clone())))?;
        write!(self.out, r#"{{"type":"{t}","{key}":"#).unwrap();
        self.schema(inner, ns)?;
        self.out.push('}');
        Ok(())
    }

    fn named(&mut self, obj: &Map<String, Value>, t: &str, ns: &str) -> Result<(), InvalidSchema> {
        let bad = |what| invalid(what, &Value::from(obj.clone()));
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("no name"))?;
        let full = fullname(name, obj.get("namespace").and_then(Value::as_str), ns);
        // Names defined inside a record default to the record's namespace.
        let inner_ns = full.rsplit_once('.').map_or("", |(space, _)| space);
        self.out.push_str(r#"{"name":"#);
        self.string(&full);
        self.out.push_str(r#","type":"#);
        match t {
            "enum" => {
                self.string("enum");
                let symbols = obj
                    .get("symbols")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("enum without symbols"))?;
                self.out.push_str(r#","symbols":["#);
                for (i, symbol) in symbols.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    self.string(symbol.as_str().ok_or_else(|| bad("bad symbol"))?);
                }
                self.out.push(']');
            }
            "fixed" => {
                self.string("fixed");
                let size = obj
                    .get("size")
                    .and_then(Value::as_u64)
                    .ok_or_else(|| bad("fixed without an integer size"))?;
                write!(self.out, r#","size":{size}"#).unwrap();
            }
            _ => {
                self.string("record");
                // Defined before its fields, which may refer to it.
                self.defined.insert(full.clone());
                let fields = obj
                    .get("fields")
                    .and_then(Value::as_array)
                    .ok_or_else(|| bad("record without fields"))?;
                self.out.push_str(r#","fields":["#);
                for (i, field) in fields.iter().enumerate() {
                    if i > 0 {
                        self.out.push(',');
                    }
                    let (Some(name), Some(schema)) =
                        (field.get("name").and_then(Value::as_str), field.get("type"))
                    else {
                        return Err(bad("bad field"));
                    };
                    self.out.push_str(r#"{"name":"#);
                    self.string(name);
                    self.out.push_str(r#","type":"#);
                    self.schema(schema, inner_ns)?;
                    self.out.push('}');
                }
                self.out.push(']');
            }
        }
        self.out.push('}');
        self.defined.insert(full);
        Ok(())
    }

    /// A JSON string, escaped only where JSON requires it.
    fn string(&mut self, s: &str) {
        self.out
            .push_str(&serde_json::to_string(s).expect("a str serializes"));
    }
}

/// The fullname of `name`, defined with the `namespace` attribute (if any)
/// inside namespace `enclosing`.
fn fullname(name: &str, namespace: Option<&str>, enclosing: &str) -> String {
    match namespace.unwrap_or(enclosing) {
        _ if name.contains('.') => name.to_owned(),
        "" => name.to_owned(),
        space => format!("{space}.{name}"),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use apache_avro::{rabin::Rabin, Schema};

    fn pcf(json: &str) -> Result<String, InvalidSchema> {
        parsing_canonical_form(&serde_json::from_str(json).unwrap())
    }

    // The expected values below are what Apache Avro for Java 1.12.2 computes
    // (`SchemaNormalization.toParsingForm` and `parsingFingerprint64`, as
    // little-endian bytes), printed by scripts/avro-interop/Fp.java:
    //
    //     mvn -q -B -f scripts/avro-interop/pom.xml dependency:copy-dependencies \
    //         -DoutputDirectory=$PWD/.cache/avro-interop/lib
    //     java -cp '.cache/avro-interop/lib/*' scripts/avro-interop/Fp.java \
    //         schemas/tick.v1.avsc schemas/tick.avsc scripts/avro-interop/pcf-sample.avsc
    //
    // (OpenJDK 17.0.15). `scripts/avro-interop/check.sh` reruns it and checks
    // its output against these constants and against this module.

    /// schemas/tick.v1.avsc, per Java.
    pub(crate) const JAVA_V1_PCF: &str = r#"{"name":"io.tickfan.Tick","type":"record","fields":[{"name":"symbol","type":"string"},{"name":"price","type":"double"},{"name":"size","type":"double"},{"name":"bid","type":["null","double"]},{"name":"ask","type":["null","double"]},{"name":"venue","type":["null","string"]},{"name":"ts","type":"long"},{"name":"seq","type":"long"}]}"#;
    pub(crate) const JAVA_V1_FINGERPRINT: [u8; 8] =
        [0x6b, 0x99, 0x3d, 0x96, 0xd4, 0x21, 0xd6, 0x89];
    /// schemas/tick.avsc, per Java.
    pub(crate) const JAVA_V2_PCF: &str = r#"{"name":"io.tickfan.Tick","type":"record","fields":[{"name":"symbol","type":"string"},{"name":"price","type":"double"},{"name":"size","type":"double"},{"name":"bid","type":["null","double"]},{"name":"ask","type":["null","double"]},{"name":"venue","type":["null","string"]},{"name":"ts","type":"long"},{"name":"seq","type":"long"},{"name":"attrs","type":{"type":"map","values":"string"}}]}"#;
    pub(crate) const JAVA_V2_FINGERPRINT: [u8; 8] =
        [0xff, 0x50, 0x9c, 0x2a, 0x16, 0x82, 0x68, 0xb4];

    const SAMPLE_JSON: &str = include_str!("../../scripts/avro-interop/pcf-sample.avsc");
    /// scripts/avro-interop/pcf-sample.avsc, per Java.
    const JAVA_SAMPLE_PCF: &str = r#"{"name":"org.example.feed.Envelope","type":"record","fields":[{"name":"id","type":{"name":"org.example.feed.Id","type":"fixed","size":16}},{"name":"side","type":{"name":"org.example.common.Side","type":"enum","symbols":["BUY","SELL"]}},{"name":"other_side","type":"org.example.common.Side"},{"name":"prices","type":{"type":"array","items":"double"}},{"name":"legs","type":{"type":"map","values":{"name":"org.example.feed.Leg","type":"record","fields":[{"name":"venue","type":["null","string"]},{"name":"id","type":"org.example.feed.Id"},{"name":"amount","type":"bytes"},{"name":"when","type":"long"}]}}},{"name":"meta","type":{"name":"x.y.Meta","type":"record","fields":[{"name":"day","type":"int"},{"name":"hash","type":{"name":"x.y.Hash","type":"fixed","size":32}},{"name":"next","type":["null","x.y.Meta"]},{"name":"prev","type":["null","x.y.Meta"]},{"name":"leg","type":"org.example.feed.Leg"},{"name":"tag","type":{"name":"Tag","type":"enum","symbols":["A","B_2"]}},{"name":"tag_again","type":"Tag"}]}},{"name":"last_leg","type":"org.example.feed.Leg"},{"name":"fault","type":["null",{"name":"org.example.feed.Fault","type":"record","fields":[{"name":"message","type":"string"}]}]},{"name":"flags","type":{"type":"map","values":{"type":"array","items":"boolean"}}},{"name":"escaped","type":"int"}]}"#;
    const JAVA_SAMPLE_FINGERPRINT: [u8; 8] = [0x12, 0xd8, 0xfa, 0x7d, 0x89, 0x4d, 0x17, 0x9c];

    #[test]
    fn tick_schemas_match_java() {
        let v1: Value = serde_json::from_str(crate::codec::avro::TICK_V1_SCHEMA_JSON).unwrap();
        let v2: Value = serde_json::from_str(crate::codec::avro::TICK_SCHEMA_JSON).unwrap();
        assert_eq!(parsing_canonical_form(&v1).unwrap(), JAVA_V1_PCF);
        assert_eq!(fingerprint(&v1).unwrap(), JAVA_V1_FINGERPRINT);
        assert_eq!(parsing_canonical_form(&v2).unwrap(), JAVA_V2_PCF);
        assert_eq!(fingerprint(&v2).unwrap(), JAVA_V2_FINGERPRINT);
    }

    #[test]
    fn every_named_and_nested_kind_matches_java() {
        // Namespaces inherited, overridden, emptied and ignored (a dotted
        // name), references resolved in the enclosing and the null
        // namespace, logical types and other attributes stripped, JSON
        // escapes undone, error written as record.
        let sample: Value = serde_json::from_str(SAMPLE_JSON).unwrap();
        assert_eq!(parsing_canonical_form(&sample).unwrap(), JAVA_SAMPLE_PCF);
        assert_eq!(fingerprint(&sample).unwrap(), JAVA_SAMPLE_FINGERPRINT);
    }

    #[test]
    fn apache_avro_differs_on_logical_types_only() {
        // AVRO-4004: the only difference for the tick schemas is `ts`, left
        // as an object once its logicalType is dropped.
        for (json, java) in [
            (crate::codec::avro::TICK_V1_SCHEMA_JSON, JAVA_V1_PCF),
            (crate::codec::avro::TICK_SCHEMA_JSON, JAVA_V2_PCF),
        ] {
            let theirs = Schema::parse_str(json).unwrap().canonical_form();
            assert_ne!(theirs, java);
            assert_eq!(theirs.replace(r#"{"type":"long"}"#, r#""long""#), java);
        }
        // The CRC itself is the same function as apache-avro's Rabin.
        for json in [
            crate::codec::avro::TICK_V1_SCHEMA_JSON,
            crate::codec::avro::TICK_SCHEMA_JSON,
        ] {
            let schema = Schema::parse_str(json).unwrap();
            assert_eq!(
                crc64_avro(schema.canonical_form().as_bytes()).to_le_bytes()[..],
                schema.fingerprint::<Rabin>().bytes[..]
            );
        }
    }

    #[test]
    fn crc64_avro_of_the_empty_input_and_a_known_string() {
        assert_eq!(crc64_avro(b""), CRC64_EMPTY);
        // apache-avro's documented example (src/rabin.rs).
        assert_eq!(
            crc64_avro(b"hello world").to_le_bytes(),
            [0x60, 0x33, 0x5b, 0xa6, 0xd0, 0x41, 0x55, 0x28]
        );
    }

    #[test]
    fn primitives_in_any_form() {
        assert_eq!(pcf(r#""int""#).unwrap(), r#""int""#);
        assert_eq!(pcf(r#"{"type":"int"}"#).unwrap(), r#""int""#);
        assert_eq!(
            pcf(r#"{"type":"int","logicalType":"date","x":1}"#).unwrap(),
            r#""int""#
        );
        assert_eq!(
            pcf(r#"[ "null" , {"type": "string"} ]"#).unwrap(),
            r#"["null","string"]"#
        );
    }

    #[test]
    fn what_java_refuses_is_invalid() {
        for json in [
            r#"{"type":{"type":"string"}}"#,
            r#"{"type":"fixed","name":"F","size":"16"}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":"Nope"}]}"#,
            r#"{"type":"record","name":"R","fields":[{"name":"f","type":{"type":"R"}}]}"#,
            r#"{"type":"array"}"#,
            r#"{"type":"enum","name":"E"}"#,
            r#"{"name":"R"}"#,
            "42",
        ] {
            assert!(pcf(json).is_err(), "{json}");
        }
    }

    /// Run by scripts/avro-interop/check.sh: `TICKFAN_AVRO_JAVA_OUT` names
    /// the output of Fp.java (one `file<TAB>fingerprint<TAB>PCF` line per
    /// schema, paths relative to the crate root). Each line must match this
    /// module, and the tick schemas' lines the constants pinned above.
    #[test]
    #[cfg(avro_java)] // compiled only for scripts/avro-interop/check.sh (CI)
    fn java_output_matches() {
        let path = std::env::var("TICKFAN_AVRO_JAVA_OUT").expect("TICKFAN_AVRO_JAVA_OUT not set");
        let out = std::fs::read_to_string(path).unwrap();
        let pinned = [
            ("schemas/tick.v1.avsc", JAVA_V1_PCF, JAVA_V1_FINGERPRINT),
            ("schemas/tick.avsc", JAVA_V2_PCF, JAVA_V2_FINGERPRINT),
            (
                "scripts/avro-interop/pcf-sample.avsc",
                JAVA_SAMPLE_PCF,
                JAVA_SAMPLE_FINGERPRINT,
            ),
        ];
        let mut seen = 0;
        for line in out.lines() {
            let mut cols = line.split('\t');
            let (Some(file), Some(fp), Some(java_pcf), None) =
                (cols.next(), cols.next(), cols.next(), cols.next())
            else {
                panic!("bad line: {line}")
            };
            let json =
                std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/").to_owned() + file)
                    .unwrap();
            let schema: Value = serde_json::from_str(&json).unwrap();
            let ours = fingerprint(&schema).unwrap();
            let hex: String = ours.iter().map(|b| format!("{b:02x}")).collect();
            assert_eq!(parsing_canonical_form(&schema).unwrap(), java_pcf, "{file}");
            assert_eq!(hex, fp, "{file}");
            if let Some((_, pcf, fp)) = pinned.iter().find(|(f, ..)| *f == file) {
                assert_eq!((*pcf, *fp), (java_pcf, ours), "{file}: pinned values");
                seen += 1;
            }
        }
        assert_eq!(seen, pinned.len(), "Java output lacks a pinned schema");
    }
}
