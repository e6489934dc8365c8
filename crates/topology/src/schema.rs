//! The JSON Schema of a topology file, generated from the very types the
//! parser reads the file into ([`crate::parse`](mod@crate::parse)'s raw structs), so that
//! the two cannot disagree on the file's shape: the fields each object
//! has, which are required, their types, the closed sets of words
//! (`role`, `type`, `protocol`, …), name patterns and numeric ranges that
//! do not depend on other fields, and no unknown field anywhere. What
//! depends on the rest of the file (unique names, addresses in subnets, a
//! VLAN id's range for its network type, references to other objects) is
//! validation's alone. `ovslab schema` prints it; editors use it through
//! the `yaml-language-server` modeline (docs/topology.md).

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator};

use crate::parse::{RawTopology, S};

/// A located value has the schema of its value.
impl<T: JsonSchema> JsonSchema for S<T> {
    fn inline_schema() -> bool {
        T::inline_schema()
    }

    fn schema_name() -> Cow<'static, str> {
        T::schema_name()
    }

    fn schema_id() -> Cow<'static, str> {
        T::schema_id()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        T::json_schema(generator)
    }
}

/// The JSON Schema (draft 2020-12) of a topology file.
pub fn json_schema() -> serde_json::Value {
    let mut schema = schemars::schema_for!(RawTopology);
    schema.insert("title".into(), "ovslab topology".into());
    schema.insert(
        "description".into(),
        "A lab for ovslab: OpenStack Neutron \"classic Open vSwitch\" in network namespaces \
         (docs/topology.md, ovslab-topology(5)). This schema checks the file's shape; \
         `ovslab validate FILE` checks everything."
            .into(),
    );
    schema.to_value()
}
