//! Every unknown key and wrong type of a Jailfile at once, in the Jailfile's words: the parsed
//! TOML is walked against the Jailfile's JSON schema (the model's own description) before serde,
//! which stops at the first problem, ever sees it.

use std::sync::OnceLock;

use serde_json::Value as Schema;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

use crate::diagnostics::{closest, Problem};

/// The problems of the document's shape: keys the model does not have, values of the wrong
/// kind, required keys missing, numbers out of range. Empty when serde will accept it.
pub(super) fn problems(document: &DeTable<'_>) -> Vec<Problem> {
    let mut walk = Walk { root: jailfile_schema(), problems: Vec::new() };
    walk.table(document, walk.root, "", 0..0);
    walk.problems
}

fn jailfile_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| schemars::schema_for!(crate::jailfile::Jailfile).as_value().clone())
}

struct Walk<'s> {
    root: &'s Schema,
    problems: Vec<Problem>,
}

impl<'s> Walk<'s> {
    /// Follows `$ref` into `$defs`.
    fn resolve(&self, schema: &'s Schema) -> &'s Schema {
        match schema.get("$ref").and_then(Schema::as_str).and_then(|reference| reference.strip_prefix("#/$defs/")) {
            Some(name) => self.root.get("$defs").and_then(|defs| defs.get(name)).unwrap_or(schema),
            None => schema,
        }
    }

    /// The alternatives a schema allows (one for a plain schema), `null` left out: a key that
    /// may be absent is simply not written.
    fn alternatives(&self, schema: &'s Schema) -> Vec<&'s Schema> {
        let schema = self.resolve(schema);
        match schema.get("anyOf").and_then(Schema::as_array) {
            Some(branches) => branches
                .iter()
                .flat_map(|branch| self.alternatives(branch))
                .filter(|branch| branch.get("type").and_then(Schema::as_str) != Some("null"))
                .collect(),
            None => vec![schema],
        }
    }

    fn value(&mut self, value: &Spanned<DeValue<'_>>, schema: &'s Schema, key: &str) {
        let alternatives = self.alternatives(schema);
        let Some(branch) = alternatives.iter().copied().find(|branch| accepts_kind(branch, value.get_ref())) else {
            self.problems.push(self.wrong_type(value, schema, key));
            return;
        };
        match value.get_ref() {
            DeValue::Table(table) => self.table(table, branch, key, value.span()),
            DeValue::Array(items) => {
                let item_schema = branch.get("items").unwrap_or(&Schema::Null);
                for (index, item) in items.iter().enumerate() {
                    self.value(item, item_schema, &format!("{key}[{index}]"));
                }
            }
            DeValue::String(text) => self.variant(value, text, branch, key),
            DeValue::Integer(number) => self.in_range(value, number.as_str(), number.radix(), branch, key),
            _ => {}
        }
    }

    fn table(&mut self, table: &DeTable<'_>, schema: &'s Schema, key: &str, span: std::ops::Range<usize>) {
        let properties = schema.get("properties").and_then(Schema::as_object);
        let additional = schema.get("additionalProperties");
        for (name, value) in table.iter() {
            let child = join(key, name.get_ref());
            match (properties.and_then(|known| known.get(name.get_ref().as_ref())), additional) {
                (Some(property), _) => self.value(value, property, &child),
                (None, Some(Schema::Bool(false))) | (None, None) if properties.is_some() => {
                    let known: Vec<&str> =
                        properties.into_iter().flat_map(|known| known.keys()).map(String::as_str).collect();
                    self.problems.push(unknown_key(name, &child, key, &known));
                }
                (None, Some(values)) if values.is_object() => self.value(value, values, &child),
                (None, _) => {}
            }
        }
        for required in schema.get("required").and_then(Schema::as_array).into_iter().flatten() {
            let Some(required) = required.as_str() else { continue };
            if !table.iter().any(|(name, _)| name.get_ref() == required) {
                let property = properties.and_then(|known| known.get(required)).unwrap_or(&Schema::Null);
                let example = example_of(required, property, &self.alternatives(property));
                let place = if key.is_empty() { "the Jailfile".to_owned() } else { format!("`{key}`") };
                self.problems.push(
                    Problem::new(key, span.clone(), format!("{place} needs `{required}`"))
                        .with_help(format!("add it, e.g. `{example}`")),
                );
            }
        }
    }

    /// A string where the schema lists the allowed words (`kind`, `network`, namespaces).
    fn variant(&mut self, value: &Spanned<DeValue<'_>>, text: &str, schema: &Schema, key: &str) {
        let words = words_of(schema);
        if words.is_empty() || words.contains(&text) {
            return;
        }
        let problem = Problem::new(key, value.span(), one_of(leaf(key), &words)).with_value(text);
        self.problems.push(match closest(text, words.iter().copied()) {
            Some(best) => problem.with_help(format!("did you mean `{best}`?")),
            None => problem,
        });
    }

    fn in_range(&mut self, value: &Spanned<DeValue<'_>>, digits: &str, radix: u32, schema: &Schema, key: &str) {
        let largest = match schema.get("format").and_then(Schema::as_str) {
            Some("uint16") => u64::from(u16::MAX),
            Some("uint32") => u64::from(u32::MAX),
            _ => u64::MAX,
        };
        let smallest = schema.get("minimum").and_then(Schema::as_u64);
        let number = i128::from_str_radix(&digits.replace('_', ""), radix).ok();
        let fits = number.is_some_and(|n| n <= i128::from(largest) && smallest.is_none_or(|min| n >= i128::from(min)));
        if !fits {
            let from = smallest.unwrap_or(0);
            self.problems.push(
                Problem::new(key, value.span(), format!("`{}` is a number from {from} to {largest}", leaf(key)))
                    .with_value(digits),
            );
        }
    }

    /// "write modes as strings: `mode = \"1777\"`" for a scalar of the wrong kind; "`binaries`
    /// is a list of names or paths, e.g. ..." where the shape itself is wrong.
    fn wrong_type(&self, value: &Spanned<DeValue<'_>>, schema: &'s Schema, key: &str) -> Problem {
        let alternatives = self.alternatives(schema);
        let name = leaf(key);
        let example = example_of(name, schema, &alternatives);
        let scalar = |kind: &DeValue<'_>| !matches!(kind, DeValue::Array(_) | DeValue::Table(_));
        let message = match alternatives.as_slice() {
            [only] if !words_of(only).is_empty() => one_of(name, &words_of(only)),
            [only] if scalar(value.get_ref()) && is_scalar(only) && !is_bool(only) => {
                format!("write {name}s as {}s: `{example}`", kind_word(only))
            }
            [only] if is_list_of_tables(self, only) => {
                format!("`{key}` is a list of tables: write `[[{key}]]` above the keys of each")
            }
            [only] if is_table(only) && !is_table_value(value.get_ref()) => {
                format!("`{key}` is a table: write `[{key}]` above its keys")
            }
            _ => format!("`{key}` is {}, e.g. `{example}`", self.what(schema)),
        };
        let problem = Problem::new(key, value.span(), message);
        // A string is shown as written; a number or list is plain in the quoted line above.
        match value.get_ref() {
            DeValue::String(text) => problem.with_value(text),
            _ => problem,
        }
    }

    /// What a schema holds, in the Jailfile's words ("a list of names or paths").
    fn what(&self, schema: &'s Schema) -> String {
        let resolved = self.resolve(schema);
        if let Some(noun) = resolved.get("x-jailprov-noun").and_then(Schema::as_str) {
            return noun.to_owned();
        }
        let alternatives = self.alternatives(schema);
        let words: Vec<String> = alternatives.iter().map(|branch| self.what_one(branch)).collect();
        words.join(" or ")
    }

    fn what_one(&self, branch: &'s Schema) -> String {
        if let Some(noun) = branch.get("x-jailprov-noun").and_then(Schema::as_str) {
            return noun.to_owned();
        }
        match kinds(branch).first().copied() {
            Some("array") => {
                let items = branch.get("items").map_or_else(|| "values".to_owned(), |items| self.what(items));
                format!("a list of {}", plural(&items))
            }
            Some("object") => "a table".to_owned(),
            Some(kind) => article(kind_word(branch), kind),
            None => match branch.get("oneOf") {
                Some(_) => "a word".to_owned(),
                None => "a value".to_owned(),
            },
        }
    }
}

/// The words a schema allows (`oneOf` of consts: `kind`, `network`, namespaces); empty for others.
fn words_of(schema: &Schema) -> Vec<&str> {
    let words = schema.get("oneOf").and_then(Schema::as_array).into_iter().flatten();
    words.filter_map(|word| word.get("const").and_then(Schema::as_str)).collect()
}

fn one_of(name: &str, words: &[&str]) -> String {
    let listed = words.iter().map(|word| format!("`{word}`")).collect::<Vec<_>>().join(", ");
    format!("`{name}` is one of {listed}")
}

fn unknown_key(name: &Spanned<impl AsRef<str>>, child: &str, parent: &str, known: &[&str]) -> Problem {
    let typed = name.get_ref().as_ref();
    let place = if parent.is_empty() { "a Jailfile".to_owned() } else { format!("`{}`", strip_index(parent)) };
    let problem = Problem::new(child, name.span(), format!("unknown key `{typed}` in {place}"));
    match closest(typed, known.iter().copied()) {
        Some(best) => problem.with_help(format!("did you mean `{best}`?")),
        None => problem.with_help(format!("the keys of {place} are {}", known.join(", "))),
    }
}

/// `files[2]` -> `files`: the place of a key is its table's kind, not its index.
fn strip_index(key: &str) -> String {
    let mut text = String::new();
    let mut depth = 0;
    for character in key.chars() {
        match character {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => text.push(character),
            _ => {}
        }
    }
    text
}

fn kinds(schema: &Schema) -> Vec<&str> {
    match schema.get("type") {
        Some(Schema::String(kind)) => vec![kind.as_str()],
        Some(Schema::Array(kinds)) => kinds.iter().filter_map(Schema::as_str).filter(|kind| *kind != "null").collect(),
        _ => Vec::new(),
    }
}

fn accepts_kind(schema: &Schema, value: &DeValue<'_>) -> bool {
    let kinds = kinds(schema);
    if kinds.is_empty() {
        // A list of words (`oneOf` of consts) takes a string; anything else is not checked here.
        return schema.get("oneOf").is_none() || matches!(value, DeValue::String(_));
    }
    kinds.iter().any(|kind| match *kind {
        "string" => matches!(value, DeValue::String(_)),
        "integer" => matches!(value, DeValue::Integer(_)),
        "number" => matches!(value, DeValue::Integer(_) | DeValue::Float(_)),
        "boolean" => matches!(value, DeValue::Boolean(_)),
        "array" => matches!(value, DeValue::Array(_)),
        "object" => matches!(value, DeValue::Table(_)),
        _ => true,
    })
}

fn is_scalar(schema: &Schema) -> bool {
    kinds(schema).iter().all(|kind| !matches!(*kind, "array" | "object")) || schema.get("oneOf").is_some()
}

fn is_bool(schema: &Schema) -> bool {
    kinds(schema) == ["boolean"]
}

fn is_table(schema: &Schema) -> bool {
    kinds(schema) == ["object"]
}

fn is_table_value(value: &DeValue<'_>) -> bool {
    matches!(value, DeValue::Table(_))
}

fn is_list_of_tables(walk: &Walk<'_>, schema: &Schema) -> bool {
    kinds(schema) == ["array"] && schema.get("items").is_some_and(|items| is_table(walk.resolve(items)))
}

fn kind_word(schema: &Schema) -> &'static str {
    match kinds(schema).first().copied() {
        Some("integer" | "number") => "number",
        Some("boolean") => "true or false",
        _ => "string",
    }
}

fn article(word: &str, kind: &str) -> String {
    if kind == "boolean" {
        word.to_owned()
    } else {
        format!("a {word}")
    }
}

fn plural(noun: &str) -> String {
    match noun.strip_prefix("a ") {
        Some(rest) => format!("{rest}s"),
        None => noun.to_owned(),
    }
}

/// `name = <example>`: the schema's first example, or one made from the kind.
fn example_of(name: &str, own: &Schema, alternatives: &[&Schema]) -> String {
    let example = std::iter::once(own)
        .chain(alternatives.iter().copied())
        .find_map(|branch| branch.get("examples").and_then(|list| list.get(0)));
    let text = match example {
        Some(example) => toml_text(example),
        None => match alternatives.first().map(|branch| kinds(branch)).unwrap_or_default().first().copied() {
            Some("integer" | "number") => "1000".to_owned(),
            Some("boolean") => "true".to_owned(),
            Some("array") => "[\"...\"]".to_owned(),
            Some("object") => "{ ... }".to_owned(),
            _ => "\"...\"".to_owned(),
        },
    };
    format!("{name} = {text}")
}

/// A JSON example written as TOML (strings, numbers, booleans and lists of them).
fn toml_text(value: &Schema) -> String {
    match value {
        Schema::Array(items) => format!("[{}]", items.iter().map(toml_text).collect::<Vec<_>>().join(", ")),
        other => other.to_string(),
    }
}

fn leaf(key: &str) -> &str {
    let last = key.rsplit('.').next().unwrap_or(key);
    last.split('[').next().unwrap_or(last)
}

fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_owned()
    } else {
        format!("{parent}.{name}")
    }
}
