//! The topology file's JSON Schema against the parser: every lab file of
//! the repository (and the generated labs) conforms to it, and a file that
//! the parser refuses for its shape — an unknown field, a missing one, a
//! value of the wrong type, a word outside its set, a name or a number out
//! of its rule — is refused by the schema too.

use std::path::PathBuf;

use ovslab_topology::TunnelType;
use ovslab_topology::generate::scale_topology_of;

/// The schema, compiled (which also proves it a valid draft 2020-12 schema).
struct Validator {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

impl Validator {
    fn new() -> Self {
        let mut schemas = boon::Schemas::new();
        let mut compiler = boon::Compiler::new();
        compiler.enable_format_assertions();
        compiler
            .add_resource("topology.schema.json", ovslab_topology::json_schema())
            .unwrap();
        let index = compiler
            .compile("topology.schema.json", &mut schemas)
            .unwrap_or_else(|e| panic!("the schema does not compile: {e:#}"));
        Validator { schemas, index }
    }

    /// The schema's verdict on a YAML text: the errors, if any.
    fn check(&self, yaml: &str) -> Result<(), String> {
        let value: serde_json::Value =
            serde_saphyr::from_str(yaml).map_err(|e| format!("not YAML: {e}"))?;
        self.schemas
            .validate(&value, self.index)
            .map_err(|e| format!("{e:#}"))
    }
}

fn lab_files() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../lab-topologies");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "{files:?}");
    files
}

#[test]
fn every_lab_file_and_generated_lab_conforms() {
    let schema = Validator::new();
    for file in lab_files() {
        let text = std::fs::read_to_string(&file).unwrap();
        ovslab_topology::parse(&file.display().to_string(), &text).unwrap();
        if let Err(e) = schema.check(&text) {
            panic!("{}: {e}", file.display());
        }
    }
    for tunnel in [None, Some(TunnelType::Vxlan), Some(TunnelType::Gre)] {
        let text = scale_topology_of(3, 4, tunnel);
        ovslab_topology::parse("generated", &text).unwrap();
        schema.check(&text).unwrap();
    }
}

/// The seed lab with one edit: `from` replaced by `to`, once.
fn seed_with(from: &str, to: &str) -> String {
    let seed = ovslab_topology::SEED_YAML;
    assert!(seed.contains(from), "the seed lab has no {from:?}");
    seed.replacen(from, to, 1)
}

#[test]
fn what_the_parser_refuses_for_its_shape_the_schema_refuses() {
    let schema = Validator::new();
    let cases = [
        (
            "an unknown top-level field",
            seed_with("lab: seed\n", "lab: seed\ncolour: red\n"),
        ),
        (
            "an unknown field in a node",
            seed_with("    role: network\n", "    role: network\n    zone: a\n"),
        ),
        (
            "a missing required field",
            seed_with("    cidr: 192.168.1.0/24\n", ""),
        ),
        ("no nodes", seed_with("nodes:", "nodes_:")),
        (
            "a number that is a word",
            seed_with("segmentation_id: 101", "segmentation_id: one"),
        ),
        (
            "a list that is a word",
            seed_with("interfaces: [net1, net2]", "interfaces: net1"),
        ),
        (
            "a role outside its set",
            seed_with("role: compute", "role: hypervisor"),
        ),
        (
            "a lab name out of its rule",
            seed_with("lab: seed", "lab: 1seed"),
        ),
        (
            "a node name out of its rule",
            seed_with("  - name: compute1\n", "  - name: compute.1\n"),
        ),
        ("a port out of range", seed_with("port: 22", "port: 70000")),
        (
            "a direction outside its set",
            seed_with("direction: ingress", "direction: inbound"),
        ),
        (
            "a check protocol outside its set",
            seed_with("protocol: tcp", "protocol: sctp"),
        ),
        (
            "a network type outside its set",
            seed_with(
                "segmentation_id: 101",
                "type: vxlan6\n    segmentation_id: 101",
            ),
        ),
    ];
    for (what, text) in cases {
        assert!(
            ovslab_topology::parse("case.yaml", &text).is_err(),
            "{what}: the parser accepts it"
        );
        assert!(
            schema.check(&text).is_err(),
            "{what}: the schema accepts it"
        );
    }
}

/// What depends on the rest of the file is validation's alone: the schema
/// says nothing about it (documented in docs/topology.md).
#[test]
fn what_depends_on_the_rest_of_the_file_is_left_to_validation() {
    let schema = Validator::new();
    for text in [
        seed_with("segmentation_id: 102", "segmentation_id: 5000"),
        seed_with("address: 192.168.2.11", "address: 192.168.3.11"),
        seed_with("  - name: instance2\n", "  - name: instance1\n"),
    ] {
        assert!(ovslab_topology::parse("case.yaml", &text).is_err());
        schema.check(&text).unwrap();
    }
}
