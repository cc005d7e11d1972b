//! The item catalog: category and publish time per (tenant, item).

use std::io::BufRead;
use std::path::Path;

use recflow_schemas::{IdMap, Item, Str};

/// Catalog facts the pipeline needs, per item.
#[derive(Clone, Debug, PartialEq)]
pub struct CatalogEntry {
    pub category: Option<Str>,
    pub scenario_id: Option<Str>,
    pub publish_time: Option<i64>,
}

/// Items by tenant then item id; lookups borrow `&str` (no allocation).
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    by_tenant: IdMap<Str, IdMap<Str, CatalogEntry>>,
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
        self.put(
            item.tenant_id.clone(),
            item.item_id.clone(),
            CatalogEntry {
                category: item.category.clone(),
                scenario_id: item.scenario_id.clone(),
                publish_time: item.publish_time,
            },
        );
    }

    /// Inserts or replaces the entry of (tenant, item).
    fn put(&mut self, tenant: Str, item: Str, entry: CatalogEntry) {
        self.by_tenant.entry(tenant).or_default().insert(item, entry);
    }

    /// The entry of one item.
    pub fn get(&self, tenant: &str, item: &str) -> Option<&CatalogEntry> {
        self.by_tenant.get(tenant)?.get(item)
    }

    /// The item's category, if the catalog knows it.
    pub fn category(&self, tenant: &str, item: &str) -> Option<&Str> {
        self.get(tenant, item)?.category.as_ref()
    }

    /// Number of items.
    pub fn len(&self) -> usize {
        self.by_tenant.values().map(IdMap::len).sum()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Iterates over one tenant's items.
    pub fn tenant_items(&self, tenant: &str) -> impl Iterator<Item = (&Str, &CatalogEntry)> {
        self.by_tenant.get(tenant).into_iter().flat_map(|m| m.iter())
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
        // One line buffer for the whole file, and ids parsed straight into
        // inline `Str`s: a catalog of 80 K items cost as much as 100 K events.
        let mut line = String::new();
        for i in 1u64.. {
            line.clear();
            if reader.read_line(&mut line).map_err(io)? == 0 {
                break;
            }
            if line.trim().is_empty() {
                continue;
            }
            let item: CatalogLine = serde_json::from_str(&line).map_err(|source| CatalogError::Parse {
                path: name.to_string(),
                line: i,
                source,
            })?;
            cat.put(
                item.tenant_id,
                item.item_id,
                CatalogEntry {
                    category: item.category,
                    scenario_id: item.scenario_id,
                    publish_time: item.publish_time,
                },
            );
        }
        Ok(cat)
    }
}

/// A catalog line: an [`Item`] with the same field types (so the same lines
/// are refused), but tags and status kept as inline ids the catalog drops.
#[derive(serde::Deserialize)]
struct CatalogLine {
    tenant_id: Str,
    #[serde(default)]
    scenario_id: Option<Str>,
    item_id: Str,
    #[serde(default)]
    category: Option<Str>,
    #[serde(default, rename = "tags")]
    _tags: Vec<Str>,
    #[serde(default)]
    publish_time: Option<i64>,
    #[serde(default, rename = "status")]
    _status: Option<Str>,
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
        for bad in [
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"tags\":\"x\"}",
            "{\"tenant_id\":\"t\",\"item_id\":\"i\",\"status\":3}",
        ] {
            std::fs::write(&p, format!("\n{bad}\n")).unwrap();
            assert!(serde_json::from_str::<Item>(bad).is_err());
            assert!(matches!(Catalog::load_jsonl(&p), Err(CatalogError::Parse { line: 2, .. })), "{bad}");
        }
    }
}
