//! The item catalog: category and publish time per (tenant, item).

use std::borrow::Cow;
use std::io::BufRead;
use std::path::Path;

use recflow_schemas::{IdMap, Item, Str};

/// The pipeline's catalog: each item's category, per tenant. It is read
/// once per event without one, so an item costs 32 bytes (its id and an
/// index into the tenant's few distinct categories), not a copy of the
/// category name: a smaller table misses the cache less.
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    by_tenant: IdMap<Str, TenantCatalog>,
}

/// One tenant's items and its distinct categories.
#[derive(Clone, Debug, Default)]
struct TenantCatalog {
    /// Item id -> index into `categories`, or [`NO_CATEGORY`].
    items: IdMap<Str, u32>,
    categories: Vec<Str>,
    index: IdMap<Str, u32>,
}

/// An item the catalog knows without a category.
const NO_CATEGORY: u32 = u32::MAX;

impl TenantCatalog {
    fn put(&mut self, item: Str, category: Option<&str>) {
        let code = match category {
            None => NO_CATEGORY,
            Some(c) => match self.index.get(c) {
                Some(&i) => i,
                None => {
                    // A tenant has a few dozen distinct categories, never 2^32.
                    let i = self.categories.len() as u32;
                    let c = Str::new(c);
                    self.categories.push(c.clone());
                    self.index.insert(c, i);
                    i
                }
            },
        };
        self.items.insert(item, code);
    }
}

/// Why a catalog file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading catalog {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("catalog {path} line {line}: {source}")]
    Parse { path: String, line: u64, source: serde_json::Error },
}

impl Catalog {
    /// Inserts or replaces an item.
    pub fn upsert(&mut self, item: &Item) {
        self.put(&item.tenant_id, item.item_id.clone(), item.category.as_deref());
    }

    /// Inserts or replaces the category of (tenant, item).
    fn put(&mut self, tenant: &str, item: Str, category: Option<&str>) {
        // Looked up by `&str` first: a `Str` key is made once per tenant, not per item.
        match self.by_tenant.get_mut(tenant) {
            Some(t) => t.put(item, category),
            None => self.by_tenant.entry(Str::new(tenant)).or_default().put(item, category),
        }
    }

    /// True when the catalog knows the item (with or without a category).
    pub fn contains(&self, tenant: &str, item: &str) -> bool {
        self.by_tenant.get(tenant).is_some_and(|t| t.items.contains_key(item))
    }

    /// The item's category, if the catalog knows it.
    pub fn category(&self, tenant: &str, item: &str) -> Option<&Str> {
        let t = self.by_tenant.get(tenant)?;
        t.categories.get(*t.items.get(item)? as usize)
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.by_tenant.values().map(|t| t.items.len()).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Loads a JSONL catalog (`gen_events.py catalog` format); blank lines are skipped.
    pub fn load_jsonl(path: &Path) -> Result<Catalog, CatalogError> {
        let name = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| CatalogError::Io { path: name.clone(), source })?;
        Self::from_reader(&name, std::io::BufReader::new(file))
    }

    /// Loads a JSONL catalog from any reader; `name` is used in errors.
    pub fn from_reader(name: &str, mut reader: impl BufRead) -> Result<Catalog, CatalogError> {
        let io = |source| CatalogError::Io { path: name.to_string(), source };
        let mut cat = Catalog::default();
        // One line buffer for the whole file, parsed in place: strings are
        // borrowed from it and only the kept ids become `Str`s (a catalog of
        // 80 K items cost as much as 100 K events when every field was owned).
        let mut line = Vec::new();
        for i in 1u64.. {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(io)? == 0 {
                break;
            }
            if line.trim_ascii().is_empty() {
                continue;
            }
            let item: CatalogLine = serde_json::from_slice(&line).map_err(|source| CatalogError::Parse {
                path: name.to_string(),
                line: i,
                source,
            })?;
            cat.put(&item.tenant_id, Str::new(&item.item_id), item.category.as_deref());
        }
        Ok(cat)
    }
}

/// A catalog line: an [`Item`]'s fields with the same types (so the same
/// lines are refused); only the ids and the category are kept, and nothing
/// else is copied out of the line.
#[derive(serde::Deserialize)]
struct CatalogLine<'a> {
    #[serde(borrow)]
    tenant_id: Cow<'a, str>,
    #[serde(default, rename = "scenario_id")]
    _scenario_id: Option<AnyStr>,
    #[serde(borrow)]
    item_id: Cow<'a, str>,
    #[serde(default, borrow)]
    category: Option<Cow<'a, str>>,
    #[serde(default, rename = "tags")]
    _tags: Strings,
    #[serde(default, rename = "publish_time")]
    _publish_time: Option<i64>,
    #[serde(default, rename = "status")]
    _status: Option<AnyStr>,
}

/// A JSON string, checked and dropped.
struct AnyStr;

impl<'de> serde::Deserialize<'de> for AnyStr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = AnyStr;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyStr, E> {
                Ok(AnyStr)
            }
        }
        d.deserialize_str(V)
    }
}

/// A JSON array of strings, checked and dropped.
#[derive(Default)]
struct Strings;

impl<'de> serde::Deserialize<'de> for Strings {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Strings;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Strings, A::Error> {
                while seq.next_element::<AnyStr>()?.is_some() {}
                Ok(Strings)
            }
        }
        d.deserialize_seq(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loads_and_looks_up() {
        let dir = std::env::temp_dir().join(format!("recflow-cat-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("items.jsonl");
        std::fs::write(
            &p,
            "{\"tenant_id\":\"t\",\"item_id\":\"i1\",\"category\":\"news\",\"publish_time\":5}\n\n\
             {\"tenant_id\":\"t\",\"item_id\":\"i1\",\"category\":\"tech\"}\n",
        )
        .unwrap();
        let c = Catalog::load_jsonl(&p).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(c.category("t", "i1").map(|s| s.as_str()), Some("tech"), "later lines replace earlier");
        assert!(c.category("u", "i1").is_none());
        assert!(c.contains("t", "i1") && !c.contains("t", "i9") && !c.contains("u", "i1"));
        std::fs::write(&p, "{\"tenant_id\":1}\n").unwrap();
        assert!(matches!(Catalog::load_jsonl(&p), Err(CatalogError::Parse { line: 1, .. })));
        // Escaped strings and CRLF endings are read like any JSON; the same
        // lines an `Item` refuses are refused (tags must be strings).
        std::fs::write(
            &p,
            "{\"tenant_id\":\"t\",\"item_id\":\"i\\u0032\",\"category\":\"n\\u0065ws\",\"tags\":[\"a\"]}\r\n",
        )
        .unwrap();
        let c = Catalog::load_jsonl(&p).unwrap();
        assert_eq!(c.category("t", "i2").map(|s| s.as_str()), Some("news"));
        // Every optional field present and well typed, nulls where allowed.
        let full = "{\"tenant_id\":\"t\",\"scenario_id\":\"s\",\"item_id\":\"i3\",\"category\":null,\
                    \"tags\":[\"a\\\"b\",\"c\"],\"publish_time\":5,\"status\":\"active\"}";
        assert!(serde_json::from_str::<Item>(full).is_ok());
        std::fs::write(&p, format!("{full}\n")).unwrap();
        let c = Catalog::load_jsonl(&p).unwrap();
        assert!(c.contains("t", "i3") && c.category("t", "i3").is_none());
        // A line that is not UTF-8 is refused with its number.
        std::fs::write(&p, b"\n{\"tenant_id\":\"t\xff\",\"item_id\":\"i\"}\n").unwrap();
        assert!(matches!(Catalog::load_jsonl(&p), Err(CatalogError::Parse { line: 2, .. })));
        for bad in [
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"publish_time\":\"x\"}",
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"tags\":\"x\"}",
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"status\":3}",
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"tags\":[\"a\",1]}",
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"tags\":null}",
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"scenario_id\":5}",
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"category\":[\"news\"]}",
            "{\"tenant_id\":\"t\",\"item_id\":7}",
        ] {
            std::fs::write(&p, format!("\n{bad}\n")).unwrap();
            assert!(serde_json::from_str::<Item>(bad).is_err());
            assert!(matches!(Catalog::load_jsonl(&p), Err(CatalogError::Parse { line: 2, .. })), "{bad}");
        }
    }

    fn item(tenant: &str, id: &str, category: Option<&str>) -> Item {
        let mut v = serde_json::json!({ "tenant_id": tenant, "item_id": id });
        if let Some(c) = category {
            v["category"] = c.into();
        }
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn categories_are_kept_per_item_and_tenant_however_they_are_shared() {
        // Reference: the last category written for each (tenant, item), in a plain map.
        let writes = [
            ("t", "a", Some("news")),
            ("t", "b", Some("tech")),
            ("t", "c", Some("news")),
            ("u", "a", Some("sports")),
            ("t", "d", None),
            ("t", "b", Some("news")), // replaced by an existing category
            ("t", "c", None),         // replaced by none
            ("u", "b", Some("tech")),
        ];
        let mut c = Catalog::default();
        let mut reference = std::collections::BTreeMap::new();
        for (t, i, cat) in writes {
            c.upsert(&item(t, i, cat));
            reference.insert((t, i), cat);
        }
        assert_eq!(c.len(), reference.len());
        for ((t, i), cat) in &reference {
            assert_eq!(c.category(t, i).map(|s| s.as_str()), *cat, "{t}/{i}");
            assert!(c.contains(t, i));
        }
        assert!(c.category("u", "d").is_none() && !c.contains("u", "d"), "tenants do not share items");
    }
}
