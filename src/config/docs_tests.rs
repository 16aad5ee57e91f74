//! The configuration's documentation is held to the code: `deploy/roundtable.example.toml` and
//! the README's configuration table name every key the code reads, each with its real default.
//!
//! The code's keys are the fields of the `Raw*` structs (read off their `Deserialize` impls, so
//! a new field cannot be forgotten here); the defaults are [`DEFAULTS`] and, for the keys that
//! follow another key, [`DERIVED_DEFAULTS`].

use std::collections::BTreeMap;

use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::Value;

use super::*;

/// `[room]` keys whose default is another key's value (`Rooms::settings` falls back to it), so
/// they are not in [`DEFAULTS`]: the key and the key it follows.
const DERIVED_DEFAULTS: &[(&str, &str)] = &[
    ("room.max_participants", "media.max_legs_per_room"),
    ("room.record", "recording.auto_start"),
    ("room.aec", "audio.aec"),
];

/// The field names a struct's `Deserialize` impl asks for (a deserializer that records them).
fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Catch<'a>(&'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for Catch<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("not a struct"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("fields caught"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
            ignored_any
        }
    }

    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Catch(&mut fields));
    fields
}

/// Every key the code reads, `section.key`, except the arrays of tables (`[[dialplan]]`,
/// `[[rooms]]`, `[[trunks]]`, `[[webhooks.endpoints]]`, `[[api.tokens]]`), which are examples
/// rather than keys with defaults.
fn code_keys() -> Vec<String> {
    let sections: [(&str, &[&str]); 16] = [
        ("sip", fields_of::<sip::RawSip>()),
        ("sip.auth", fields_of::<sip::RawAuth>()),
        ("sip.limits", fields_of::<sip::RawLimits>()),
        ("sip.lockout", fields_of::<sip::RawLockout>()),
        ("media", fields_of::<media::RawMedia>()),
        ("audio", fields_of::<audio::RawAudio>()),
        ("api", fields_of::<service::RawApi>()),
        ("storage", fields_of::<storage::RawStorage>()),
        ("storage.s3", fields_of::<storage::RawS3>()),
        ("recording", fields_of::<recording::RawRecording>()),
        ("webhooks", fields_of::<webhooks::RawWebhooks>()),
        ("shutdown", fields_of::<service::RawShutdown>()),
        ("log", fields_of::<service::RawLog>()),
        ("testing", fields_of::<service::RawTesting>()),
        ("health", fields_of::<service::RawHealth>()),
        ("room", fields_of::<RoomSpec>()),
    ];
    let mut top: Vec<&str> = fields_of::<Raw>().to_vec();
    top.sort_unstable();
    let mut expected_top: Vec<&str> = sections
        .iter()
        .map(|(section, _)| *section)
        .filter(|section| !section.contains('.'))
        .chain(["dialplan", "rooms", "trunks"])
        .collect();
    expected_top.sort_unstable();
    assert_eq!(
        top, expected_top,
        "a section of Raw is missing from this test"
    );
    let tables: Vec<&str> = sections.iter().map(|(section, _)| *section).collect();
    let mut keys: Vec<String> = sections
        .iter()
        .flat_map(|(section, fields)| fields.iter().map(move |f| format!("{section}.{f}")))
        .filter(|key| {
            !tables.contains(&key.as_str()) && key != "webhooks.endpoints" && key != "api.tokens"
        })
        .collect();
    keys.sort();
    assert!(keys.len() > 60, "too few keys read: {keys:?}");
    keys
}

/// Fails naming the keys `documented` lacks and those it has that the code does not read.
fn assert_same_keys(what: &str, documented: &[String], code: &[String]) {
    let lacking: Vec<_> = code.iter().filter(|k| !documented.contains(k)).collect();
    let unknown: Vec<_> = documented.iter().filter(|k| !code.contains(k)).collect();
    assert!(
        lacking.is_empty() && unknown.is_empty(),
        "{what} lacks {lacking:?} and has {unknown:?}, which the code does not read"
    );
}

/// A TOML text as `section.key` -> value (tables flattened, arrays kept whole).
fn flatten_toml(text: &str) -> BTreeMap<String, Value> {
    let tree: Value = config::Config::builder()
        .add_source(config::File::from_str(text, config::FileFormat::Toml))
        .build()
        .unwrap()
        .try_deserialize()
        .unwrap();
    let mut out = BTreeMap::new();
    fn walk(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) => {
                for (key, value) in map {
                    let path = if prefix.is_empty() {
                        key.clone()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(&path, value, out);
                }
            }
            other => {
                out.insert(prefix.to_string(), other.clone());
            }
        }
    }
    walk("", &tree, &mut out);
    out
}

/// One TOML value written on its own (`"auto"`, `200`, `["a", "b"]`).
fn toml_value(text: &str) -> Value {
    flatten_toml(&format!("v = {text}")).remove("v").unwrap()
}

/// The embedded defaults, flattened.
fn defaults() -> BTreeMap<String, Value> {
    flatten_toml(DEFAULTS)
}

/// Every key the code reads has a default: in [`DEFAULTS`], or derived from a key that has one.
#[test]
fn every_key_has_an_embedded_default() {
    let defaults = defaults();
    let mut documented: Vec<String> = defaults.keys().cloned().collect();
    for (key, source) in DERIVED_DEFAULTS {
        assert!(
            defaults.contains_key(*source),
            "{key} follows {source}, which has no default"
        );
        assert!(
            !defaults.contains_key(*key),
            "{key} is derived and also in DEFAULTS"
        );
        documented.push(key.to_string());
    }
    assert_same_keys("DEFAULTS", &documented, &code_keys());
}

const EXAMPLE: &str = include_str!("../../deploy/roundtable.example.toml");

/// `# key = value  # default: other.key` lines of the example, under their `[section]`.
fn example_derived_keys() -> BTreeMap<String, (Value, String)> {
    let mut section = String::new();
    let mut out = BTreeMap::new();
    for line in EXAMPLE.lines() {
        if let Some(header) = line.strip_prefix('[').and_then(|l| l.split(']').next()) {
            section = header.to_string();
        }
        let Some((assignment, source)) = line
            .strip_prefix("# ")
            .and_then(|rest| rest.split_once("# default: "))
        else {
            continue;
        };
        let (key, value) = assignment
            .split_once('=')
            .expect("`# key = value  # default: x`");
        let source = source.trim().to_string();
        out.insert(
            format!("{section}.{}", key.trim()),
            (toml_value(value.trim()), source),
        );
    }
    out
}

#[test]
fn example_config_lists_every_key_with_its_default() {
    let defaults = defaults();
    let example = flatten_toml(EXAMPLE);
    for (key, value) in &example {
        assert_eq!(
            defaults.get(key),
            Some(value),
            "example's {key} differs from the default"
        );
    }
    let missing: Vec<_> = defaults
        .keys()
        .filter(|k| !example.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty(),
        "keys missing from the example: {missing:?}"
    );

    let derived = example_derived_keys();
    let names: Vec<_> = derived.keys().map(String::as_str).collect();
    let expected: Vec<_> = DERIVED_DEFAULTS.iter().map(|(key, _)| *key).collect();
    assert_eq!(
        names.len(),
        expected.len(),
        "{names:?} against {expected:?}"
    );
    for (key, source) in DERIVED_DEFAULTS {
        let (value, written_source) = &derived[*key];
        assert_eq!(written_source, source, "{key}'s derivation");
        assert_eq!(
            Some(value),
            defaults.get(*source),
            "{key}'s commented value"
        );
    }
}

#[test]
fn example_config_is_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("roundtable.toml");
    let data = dir.path().join("data");
    std::fs::write(&file, EXAMPLE).unwrap();
    let env = [(
        "ROUNDTABLE_STORAGE__PATH".to_string(),
        data.display().to_string(),
    )];
    load(Some(&file), env, &Overrides::default()).unwrap();
}

/// The README's configuration table: `key(s)` -> `default(s)`, grouped keys split apart (a bare
/// name in a group takes the section of the group's first key).
fn readme_table() -> BTreeMap<String, String> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("| key | default | meaning |")
        .expect("the configuration table");
    let mut out = BTreeMap::new();
    for row in readme[start..]
        .lines()
        .skip(2)
        .take_while(|l| l.starts_with('|'))
    {
        let cells: Vec<&str> = row.split(" | ").collect();
        let ticked = |cell: &str| -> Vec<String> {
            cell.split('`')
                .skip(1)
                .step_by(2)
                .map(String::from)
                .collect()
        };
        let keys = ticked(cells[0]);
        if keys.iter().any(|k| k.starts_with('[')) {
            continue; // [[dialplan]], [[rooms]]: arrays of tables, documented below the table
        }
        let defaults = ticked(cells[1]);
        assert!(
            defaults.len() == 1 || defaults.len() == keys.len(),
            "README row {row:?}: one default, or one per key"
        );
        let section = keys[0]
            .rsplit_once('.')
            .expect("a dotted first key")
            .0
            .to_string();
        for (i, key) in keys.iter().enumerate() {
            let key = if key.contains('.') {
                key.clone()
            } else {
                format!("{section}.{key}")
            };
            let default = defaults[if defaults.len() == 1 { 0 } else { i }].clone();
            assert!(
                out.insert(key.clone(), default).is_none(),
                "{key} twice in the README"
            );
        }
    }
    out
}

#[test]
fn readme_table_lists_every_key_with_its_default() {
    let table = readme_table();
    let documented: Vec<String> = table.keys().cloned().collect();
    assert_same_keys("the README's table", &documented, &code_keys());
    let defaults = defaults();
    for (key, written) in &table {
        match DERIVED_DEFAULTS.iter().find(|(derived, _)| derived == key) {
            Some((_, source)) => assert_eq!(written, source, "README: {key}'s default follows"),
            None => assert_eq!(
                Some(&toml_value(written)),
                defaults.get(key),
                "README: {key}"
            ),
        }
    }
}

/// Every TOML example in the README is a configuration `check-config` accepts.
#[test]
fn readme_toml_examples_are_accepted() {
    let readme = include_str!("../../README.md");
    let blocks: Vec<&str> = readme
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap_or_default())
        .collect();
    assert!(blocks.len() >= 2, "the README's TOML examples are gone");
    for block in blocks {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("roundtable.toml");
        std::fs::write(&file, block).unwrap();
        let env = [(
            "ROUNDTABLE_STORAGE__PATH".to_string(),
            dir.path().join("data").display().to_string(),
        )];
        if let Err(error) = load(Some(&file), env, &Overrides::default()) {
            panic!("README example rejected: {error}\n{block}");
        }
    }
}

#[test]
fn readme_trunk_example_names_every_trunk_key() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let section = readme
        .split("## SIP trunks")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("the README has a SIP trunks section");
    let missing: Vec<&str> = fields_of::<trunks::RawTrunk>()
        .iter()
        .copied()
        .filter(|key| !section.contains(&format!("\n{key} = ")))
        .collect();
    assert!(
        missing.is_empty(),
        "the README's [[trunks]] example lacks {missing:?}"
    );
}
