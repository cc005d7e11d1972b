//! The profile job's [`ProfileStore`] on MongoDB `user_profiles`: a
//! (re)started pipeline continues each user's cumulative profile from the
//! document the last run wrote.

use recflow_operators::profile::{ProfileKey, ProfileStore};
use recflow_schemas::ProfileDoc;
use recflow_sinks::mongo::MongoProfiles;

/// Reads stored profiles in batches by their natural `_id`.
pub struct MongoProfileStore(MongoProfiles);

impl MongoProfileStore {
    /// A store on the configured database.
    pub fn new(profiles: MongoProfiles) -> Self {
        MongoProfileStore(profiles)
    }
}

impl ProfileStore for MongoProfileStore {
    fn load(&mut self, keys: &[ProfileKey]) -> Result<Vec<ProfileDoc>, String> {
        self.0.load_profiles(keys).map_err(|e| e.to_string())
    }
}
