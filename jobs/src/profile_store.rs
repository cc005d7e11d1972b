//! The profile job's [`ProfileStore`] on MongoDB `user_profiles`: a
//! (re)started pipeline continues each user's cumulative profile from the
//! document the last run wrote.

use mongodb::bson::{self, doc, Document};
use recflow_operators::profile::{ProfileKey, ProfileStore};
use recflow_schemas::ProfileDoc;
use recflow_sinks::mongo::{natural_id, PROFILES};
use recflow_sinks::MongoDb;

/// Ids per query: one `$in` on the primary key.
const CHUNK: usize = 500;

/// Reads stored profiles by their natural `_id`.
pub struct MongoProfileStore(MongoDb);

impl MongoProfileStore {
    /// A store on the configured database.
    pub fn new(db: MongoDb) -> Self {
        MongoProfileStore(db)
    }
}

impl ProfileStore for MongoProfileStore {
    fn load(&mut self, keys: &[ProfileKey]) -> Result<Vec<ProfileDoc>, String> {
        let coll = self.0.database().collection::<Document>(PROFILES);
        let mut out = Vec::new();
        for chunk in keys.chunks(CHUNK) {
            let ids: Vec<String> = chunk.iter().map(|(t, u, s)| natural_id(&[t, u, s])).collect();
            let found = coll.find(doc! { "_id": { "$in": ids } }).run().map_err(|e| e.to_string())?;
            for d in found {
                let mut d = d.map_err(|e| e.to_string())?;
                d.remove("_id");
                out.push(bson::from_document(d).map_err(|e| format!("bad profile document: {e}"))?);
            }
        }
        Ok(out)
    }
}
