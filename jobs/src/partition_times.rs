//! [`PartitionTimes`] in Redis, for brokers that drop commit metadata:
//! HASH `recflow:ptime:{group}:{topic}:{partition}`, field = committed offset,
//! value = the partition's max event time before it. Older offsets are
//! trimmed once a newer one is saved (commits only move forward).

use std::sync::Mutex;

use recflow_sources::PartitionTimes;

/// Saved offsets kept per partition besides the newest (a commit may fail after the save).
const KEEP: usize = 4;

/// Redis-backed partition times.
pub struct RedisPartitionTimes {
    client: redis::Client,
    /// Connection reused across calls (commits are every few seconds).
    con: Mutex<Option<redis::Connection>>,
}

impl RedisPartitionTimes {
    /// A store on the Redis at `url` (connects lazily).
    pub fn new(url: &str) -> anyhow::Result<Self> {
        Ok(RedisPartitionTimes { client: redis::Client::open(url)?, con: Mutex::new(None) })
    }

    fn with_con<T>(&self, f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>) -> Result<T, String> {
        let mut guard = self.con.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            *guard = Some(self.client.get_connection().map_err(|e| e.to_string())?);
        }
        let con = guard.as_mut().ok_or("no connection")?;
        let r = f(con).map_err(|e| e.to_string());
        if r.is_err() {
            // Reconnect next time.
            *guard = None;
        }
        r
    }
}

fn key(group: &str, topic: &str, partition: i32) -> String {
    format!("recflow:ptime:{group}:{topic}:{partition}")
}

impl PartitionTimes for RedisPartitionTimes {
    fn save(&self, group: &str, positions: &[(String, i32, i64, i64)]) -> Result<(), String> {
        self.with_con(|con| {
            for (topic, partition, offset, max_ts) in positions {
                let k = key(group, topic, *partition);
                let _: () = redis::cmd("HSET").arg(&k).arg(offset).arg(max_ts).query(con)?;
                let fields: Vec<i64> = redis::cmd("HKEYS").arg(&k).query(con)?;
                let mut older: Vec<i64> = fields.into_iter().filter(|f| f < offset).collect();
                older.sort_unstable();
                if older.len() > KEEP {
                    let drop = &older[..older.len() - KEEP];
                    let _: () = redis::cmd("HDEL").arg(&k).arg(drop).query(con)?;
                }
            }
            Ok(())
        })
    }

    fn load(&self, group: &str, topic: &str, partition: i32, offset: i64) -> Result<Option<i64>, String> {
        self.with_con(|con| redis::cmd("HGET").arg(key(group, topic, partition)).arg(offset).query(con))
    }
}
