//! Deep merge of one TOML table onto another, reporting what it changed.
//!
//! Tables merge key by key, recursively; anything else (strings, numbers, booleans, dates,
//! arrays, and a table meeting a non-table) is replaced whole by the overlay's value. An
//! array is replaced rather than concatenated because every array in the gateway's config
//! is a complete list (rules, algorithms, detectors): appending would change its meaning.

use toml::{Table, Value};

/// One value the overlay set, with what the base had there.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// Dotted path, e.g. `recording.fsync`.
    pub key: String,
    /// The base's value, if it had one.
    pub old: Option<Value>,
    /// The overlay's value.
    pub new: Value,
}

impl Change {
    /// Whether a value the base set is now different (as opposed to a value the base
    /// left to its default, or one it already had).
    pub fn replaced(&self) -> bool {
        self.old.as_ref().is_some_and(|old| old != &self.new)
    }
}

/// Merges `overlay` onto `base` and returns every leaf the overlay set, sorted by key.
pub fn merge(base: &mut Table, overlay: &Table) -> Vec<Change> {
    let mut changes = Vec::new();
    merge_into(base, overlay, "", &mut changes);
    changes.sort_by(|a, b| a.key.cmp(&b.key));
    changes
}

fn merge_into(base: &mut Table, overlay: &Table, prefix: &str, changes: &mut Vec<Change>) {
    for (key, new) in overlay {
        let path = join(prefix, key);
        match (base.get_mut(key), new) {
            (Some(Value::Table(base_table)), Value::Table(overlay_table)) => {
                merge_into(base_table, overlay_table, &path, changes);
            }
            (old, Value::Table(overlay_table)) => {
                // Whatever the base had here (nothing, or a non-table) goes; report the
                // leaves the overlay brings, each against the old value if it was a leaf.
                let old = old.map(|v| std::mem::replace(v, Value::Table(Table::new())));
                let mut fresh = Table::new();
                let before = changes.len();
                merge_into(&mut fresh, overlay_table, &path, changes);
                if let Some(old) = old {
                    for change in &mut changes[before..] {
                        change.old.get_or_insert_with(|| old.clone());
                    }
                }
                base.insert(key.clone(), Value::Table(fresh));
            }
            (old, new) => {
                let old = old.map(|v| std::mem::replace(v, new.clone()));
                if old.is_none() {
                    base.insert(key.clone(), new.clone());
                }
                changes.push(Change {
                    key: path,
                    old,
                    new: new.clone(),
                });
            }
        }
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// Every leaf key of `table` as a dotted path.
pub fn leaf_keys(table: &Table, prefix: &str, out: &mut Vec<String>) {
    for (key, value) in table {
        let path = join(prefix, key);
        match value {
            Value::Table(inner) => leaf_keys(inner, &path, out),
            _ => out.push(path),
        }
    }
}

/// A value as it would be written in the file (`"zstd"`, `1024`, `[1, 2]`).
pub fn show(value: &Value) -> String {
    match value {
        Value::Table(t) => format!("{{ {} }}", t.to_string().trim().replace('\n', ", ")),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(text: &str) -> Table {
        toml::from_str(text).expect("fixture parses")
    }

    #[test]
    fn tables_merge_key_by_key_and_leaves_are_replaced() {
        let mut base = table(
            "[listen]\naddress = \"0.0.0.0:6432\"\nworkers = 4\n[recording]\nfsync = \"off\"\n",
        );
        let overlay = table(
            "[listen]\nworkers = 1\npin_workers = true\n[recording]\nfsync = \"every_block\"\n[io]\nbacklog = 256\n",
        );
        let changes = merge(&mut base, &overlay);
        assert_eq!(
            base,
            table(
                "[listen]\naddress = \"0.0.0.0:6432\"\nworkers = 1\npin_workers = true\n\
                 [recording]\nfsync = \"every_block\"\n[io]\nbacklog = 256\n"
            )
        );
        let summary: Vec<(&str, Option<String>, String)> = changes
            .iter()
            .map(|c| (c.key.as_str(), c.old.as_ref().map(show), show(&c.new)))
            .collect();
        assert_eq!(
            summary,
            [
                ("io.backlog", None, "256".into()),
                ("listen.pin_workers", None, "true".into()),
                ("listen.workers", Some("4".into()), "1".into()),
                (
                    "recording.fsync",
                    Some("\"off\"".into()),
                    "\"every_block\"".into()
                ),
            ]
        );
        assert!(changes[2].replaced());
        assert!(!changes[1].replaced(), "the file did not set it");
    }

    #[test]
    fn arrays_are_replaced_not_appended() {
        let mut base = table("[policy]\ndangerous_functions = [\"pg_read_file\", \"lo_*\"]\n");
        let overlay = table("[policy]\ndangerous_functions = [\"dblink*\"]\n");
        let changes = merge(&mut base, &overlay);
        assert_eq!(
            base,
            table("[policy]\ndangerous_functions = [\"dblink*\"]\n")
        );
        assert_eq!(changes.len(), 1);
        assert!(changes[0].replaced());
    }

    #[test]
    fn an_equal_value_is_reported_but_not_as_replaced() {
        let mut base = table("[limits]\nbuffer_bytes = 65536\n");
        let changes = merge(&mut base, &table("[limits]\nbuffer_bytes = 65536\n"));
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].replaced());
    }

    #[test]
    fn a_table_meeting_a_scalar_replaces_it_and_reports_the_old_value() {
        let mut base = table("io = 3\n");
        let changes = merge(&mut base, &table("[io]\nbacklog = 8\n"));
        assert_eq!(base, table("[io]\nbacklog = 8\n"));
        assert_eq!(changes[0].old, Some(Value::Integer(3)));
        let mut base = table("[io]\nbacklog = 8\n");
        let changes = merge(&mut base, &table("io = 3\n"));
        assert_eq!(base, table("io = 3\n"));
        assert_eq!(changes[0].key, "io");
    }

    #[test]
    fn nested_tables_merge_at_every_depth() {
        let mut base = table("[a.b.c]\nx = 1\ny = 2\n");
        let changes = merge(&mut base, &table("[a.b.c]\ny = 3\n[a.b.d]\nz = 4\n"));
        assert_eq!(base, table("[a.b.c]\nx = 1\ny = 3\n[a.b.d]\nz = 4\n"));
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert_eq!(keys, ["a.b.c.y", "a.b.d.z"]);
    }
}
