//! The committed JSON schema is the one the Rust types generate, and every example obeys it.
#![allow(clippy::disallowed_methods)] // tests build fixtures and jails with plain fs calls

use std::path::{Path, PathBuf};

fn example_jailfiles() -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("examples")
        .expect("examples/ exists")
        .filter_map(|entry| entry.ok())
        .map(|entry| entry.path().join("Jailfile.toml"))
        .filter(|path| path.exists())
        .collect();
    found.sort();
    found
}

#[test]
fn committed_schema_matches_the_rust_types() {
    let generated = jailprov::jailfile::json_schema();
    let committed = std::fs::read_to_string("schemas/jailfile.schema.json").unwrap_or_default();
    if committed != generated && std::env::var_os("JAILPROV_BLESS").is_some() {
        std::fs::write("schemas/jailfile.schema.json", &generated).expect("write schema");
        return;
    }
    assert!(
        committed == generated,
        "schemas/jailfile.schema.json is stale: regenerate it with `JAILPROV_BLESS=1 cargo test --test schema` \
         (or `cargo run -- schema > schemas/jailfile.schema.json`)"
    );
}

#[test]
fn every_example_validates_against_the_schema() {
    let schema: serde_json::Value =
        serde_json::from_str(&jailprov::jailfile::json_schema()).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let examples = example_jailfiles();
    assert!(examples.len() >= 3, "expected the seed-shell, python and sftp examples, found {examples:?}");
    for path in examples {
        let text = std::fs::read_to_string(&path).expect("read example");
        let value: toml::Value = toml::from_str(&text).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let json = serde_json::to_value(value).expect("TOML converts to JSON");
        let errors: Vec<String> =
            validator.iter_errors(&json).map(|error| format!("{error} at {}", error.instance_path())).collect();
        assert!(errors.is_empty(), "{} breaks the schema: {errors:#?}", path.display());
    }
}

#[test]
fn schema_rejects_an_unknown_key() {
    let schema: serde_json::Value =
        serde_json::from_str(&jailprov::jailfile::json_schema()).expect("the schema is JSON");
    let validator = jsonschema::validator_for(&schema).expect("the schema compiles");
    let bad = serde_json::json!({"root": "/srv/jails/x", "binarys": ["sh"]});
    assert!(!validator.is_valid(&bad), "additionalProperties must be false so typos are caught by editors too");
}

#[test]
fn every_example_passes_validation_on_this_host() {
    for path in example_jailfiles() {
        let spec = jailprov::spec::load(Path::new(&path), None, &jailprov::host::HostFs::real());
        if let Err(error) = spec {
            panic!("{} does not validate on this host:\n{error:#}", path.display());
        }
    }
}

/// Every schema `jailprov schema KIND` prints is committed as schemas/KIND.schema.json, unchanged.
#[test]
fn committed_output_schemas_match_the_rust_types() {
    let mut stale = Vec::new();
    for kind in jailprov::cli::SchemaKind::ALL {
        let file = jailprov::reports::schema_file(kind);
        let generated = jailprov::reports::json_schema(kind);
        let committed = std::fs::read_to_string(&file).unwrap_or_default();
        if committed == generated {
            continue;
        }
        if std::env::var_os("JAILPROV_BLESS").is_some() {
            std::fs::write(&file, &generated).expect("write schema");
        } else {
            stale.push(file);
        }
    }
    assert!(
        stale.is_empty(),
        "stale: {stale:?}; regenerate with `JAILPROV_BLESS=1 cargo test --test schema` (or `jailprov schema KIND > FILE`)"
    );
}

#[test]
fn every_output_schema_compiles_and_forbids_unknown_fields() {
    for kind in jailprov::cli::SchemaKind::ALL {
        let schema: serde_json::Value =
            serde_json::from_str(&jailprov::reports::json_schema(kind)).expect("the schema is JSON");
        jsonschema::validator_for(&schema).unwrap_or_else(|error| panic!("{}: {error}", kind.name()));
    }
}
