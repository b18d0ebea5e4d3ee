//! The queue: durable work of any kind (notifications to deliver, torrents to
//! brew, jobs an administrator asked for), on SQLite and PostgreSQL alike.
//!
//! Items are enqueued inside a [`WriteTx`], so work exists exactly when the
//! change that caused it is committed. A claimer takes ready items under a
//! lease and a token of its own: on PostgreSQL with `FOR UPDATE SKIP LOCKED`,
//! so claimers on any number of instances never take the same item, on
//! SQLite under the one write lock. A claimer that dies (or takes too long)
//! loses its lease, and the item is claimed again; nothing is lost between
//! claim and [`Metadata::ack`]. A failure puts the item back after a backoff;
//! past the policy's attempts it is dead-lettered, kept for inspection and
//! [`Metadata::replay`].

use std::time::Duration;

use sqlx::Row;

use crate::{locking, now_millis, Backend, Metadata, Result, WriteTx};

/// How one kind of work is leased and retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuePolicy {
    /// How long a claim holds an item before another claimer may take it.
    pub lease: Duration,
    /// Attempts (claims) after which a failing item is dead-lettered.
    pub max_attempts: u32,
    /// The delay before the first retry, doubled for each further attempt.
    pub backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for QueuePolicy {
    fn default() -> Self {
        QueuePolicy {
            lease: Duration::from_secs(60),
            max_attempts: 10,
            backoff: Duration::from_secs(1),
            max_backoff: Duration::from_secs(3600),
        }
    }
}

impl QueuePolicy {
    /// The delay before retrying an item that has failed `attempts` times.
    pub fn backoff_after(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(32);
        self.backoff.saturating_mul(1u32 << doublings.min(31)).min(self.max_backoff)
    }
}

/// An item taken from the queue, held until acked, retried or its lease ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claimed {
    pub id: i64,
    pub kind: String,
    pub payload: String,
    /// Claims so far, this one included.
    pub attempts: u32,
    pub created_at: i64,
    token: String,
}

/// What became of a failed item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retried {
    /// Claimable again from this time (milliseconds since the epoch).
    Later(i64),
    /// Out of attempts: dead-lettered.
    Dead,
    /// The lease had run out and another claimer holds the item now.
    LostLease,
}

/// A dead-lettered item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadItem {
    pub id: i64,
    pub payload: String,
    pub attempts: u32,
    pub last_error: Option<String>,
    pub created_at: i64,
    pub dead_at: i64,
}

/// The state of one kind of work.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Claimable now.
    pub ready: u64,
    /// Held by a claimer.
    pub leased: u64,
    /// Waiting for a backoff (or a delay given at enqueue) to pass.
    pub delayed: u64,
    pub dead: u64,
    /// When the oldest live item was enqueued.
    pub oldest: Option<i64>,
}

/// Errors are kept this long at most.
const MAX_ERROR_LEN: usize = 2000;

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn count(v: i64) -> u32 {
    u32::try_from(v.max(0)).unwrap_or(u32::MAX)
}

impl WriteTx {
    /// Adds an item of `kind`, claimable once `delay` has passed after the
    /// commit. Returns its id.
    pub async fn enqueue(&mut self, kind: &str, payload: &str, delay: Duration) -> Result<i64> {
        let now = now_millis();
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO queue (kind, payload, created_at, not_before) VALUES ($1, $2, $3, $4) RETURNING id",
        )
        .bind(kind)
        .bind(payload)
        .bind(now)
        .bind(now.saturating_add(millis(delay)))
        .fetch_one(&mut *self.tx)
        .await?;
        Ok(id)
    }
}

impl Metadata {
    /// [`WriteTx::enqueue`] in a transaction of its own.
    pub async fn enqueue(&self, kind: &str, payload: &str, delay: Duration) -> Result<i64> {
        let mut tx = self.write_tx().await?;
        let id = tx.enqueue(kind, payload, delay).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Claims up to `limit` ready items of `kind`, oldest first, under the
    /// policy's lease. Items whose last lease ran out with no attempts left
    /// are dead-lettered instead.
    pub async fn claim(&self, kind: &str, limit: i64, policy: &QueuePolicy) -> Result<Vec<Claimed>> {
        let now = now_millis();
        let token = uuid::Uuid::new_v4().to_string();
        let mut tx = self.begin(&self.write).await?;
        sqlx::query(
            "UPDATE queue SET dead_at = $2, lease_until = 0, lease_token = NULL, \
               last_error = COALESCE(last_error, 'the lease ran out') \
             WHERE kind = $1 AND dead_at IS NULL AND lease_until > 0 AND lease_until < $2 AND attempts >= $3",
        )
        .bind(kind)
        .bind(now)
        .bind(i64::from(policy.max_attempts))
        .execute(&mut *tx)
        .await?;
        // Items another claimer is taking right now are skipped, not waited for.
        let pick = locking!(
            self.backend,
            "SELECT id FROM queue WHERE kind = $1 AND dead_at IS NULL AND not_before <= $2 AND lease_until < $2 \
             ORDER BY not_before, id LIMIT $5",
            "FOR UPDATE SKIP LOCKED"
        );
        let sql = format!(
            "UPDATE queue SET lease_until = $3, lease_token = $4, attempts = attempts + 1 WHERE id IN ({pick}) \
             RETURNING id, payload, attempts, created_at"
        );
        let rows = sqlx::query(&sql)
            .bind(kind)
            .bind(now)
            .bind(now.saturating_add(millis(policy.lease)))
            .bind(&token)
            .bind(limit.max(0))
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(Claimed {
                id: r.try_get(0)?,
                kind: kind.to_owned(),
                payload: r.try_get(1)?,
                attempts: count(r.try_get(2)?),
                created_at: r.try_get(3)?,
                token: token.clone(),
            });
        }
        out.sort_by_key(|c| c.id);
        Ok(out)
    }

    /// Marks a claimed item done (it is deleted). False when the lease had
    /// run out and another claimer took the item.
    pub async fn ack(&self, item: &Claimed) -> Result<bool> {
        let n = sqlx::query("DELETE FROM queue WHERE id = $1 AND lease_token = $2")
            .bind(item.id)
            .bind(&item.token)
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Holds a claimed item for another lease, for work that runs long.
    /// False when the lease had already been lost.
    pub async fn renew(&self, item: &Claimed, policy: &QueuePolicy) -> Result<bool> {
        let n = sqlx::query("UPDATE queue SET lease_until = $3 WHERE id = $1 AND lease_token = $2")
            .bind(item.id)
            .bind(&item.token)
            .bind(now_millis().saturating_add(millis(policy.lease)))
            .execute(&self.write)
            .await?
            .rows_affected();
        Ok(n > 0)
    }

    /// Puts a failed item back, claimable after the policy's backoff, or
    /// dead-letters it when it has used its attempts.
    pub async fn retry(&self, item: &Claimed, error: &str, policy: &QueuePolicy) -> Result<Retried> {
        let now = now_millis();
        let dead = item.attempts >= policy.max_attempts;
        let at = now.saturating_add(millis(policy.backoff_after(item.attempts)));
        let error: String = error.chars().take(MAX_ERROR_LEN).collect();
        let n = sqlx::query(
            "UPDATE queue SET lease_until = 0, lease_token = NULL, last_error = $3, not_before = $4, dead_at = $5 \
             WHERE id = $1 AND lease_token = $2",
        )
        .bind(item.id)
        .bind(&item.token)
        .bind(&error)
        .bind(at)
        .bind(dead.then_some(now))
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(match (n, dead) {
            (0, _) => Retried::LostLease,
            (_, true) => Retried::Dead,
            (_, false) => Retried::Later(at),
        })
    }

    /// Dead-lettered items of `kind`, most recent first.
    pub async fn dead_letters(&self, kind: &str, limit: i64) -> Result<Vec<DeadItem>> {
        let rows = sqlx::query(
            "SELECT id, payload, attempts, last_error, created_at, dead_at FROM queue \
             WHERE kind = $1 AND dead_at IS NOT NULL ORDER BY dead_at DESC, id DESC LIMIT $2",
        )
        .bind(kind)
        .bind(limit.max(0))
        .fetch_all(&self.read)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(DeadItem {
                    id: r.try_get(0)?,
                    payload: r.try_get(1)?,
                    attempts: count(r.try_get(2)?),
                    last_error: r.try_get(3)?,
                    created_at: r.try_get(4)?,
                    dead_at: r.try_get(5)?,
                })
            })
            .collect()
    }

    /// Makes a dead-lettered item claimable again, with its attempts reset.
    /// False when there is no such dead item.
    pub async fn replay(&self, id: i64) -> Result<bool> {
        let n = sqlx::query(
            "UPDATE queue SET dead_at = NULL, attempts = 0, not_before = $2, lease_until = 0 \
             WHERE id = $1 AND dead_at IS NOT NULL",
        )
        .bind(id)
        .bind(now_millis())
        .execute(&self.write)
        .await?
        .rows_affected();
        Ok(n > 0)
    }

    /// How much work of `kind` there is, and in which state.
    pub async fn queue_stats(&self, kind: &str) -> Result<QueueStats> {
        let now = now_millis();
        let r = sqlx::query(
            "SELECT \
               COALESCE(SUM(CASE WHEN dead_at IS NULL AND lease_until < $2 AND not_before <= $2 THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN dead_at IS NULL AND lease_until >= $2 THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN dead_at IS NULL AND lease_until < $2 AND not_before > $2 THEN 1 ELSE 0 END), 0), \
               COALESCE(SUM(CASE WHEN dead_at IS NOT NULL THEN 1 ELSE 0 END), 0), \
               MIN(CASE WHEN dead_at IS NULL THEN created_at END) \
             FROM queue WHERE kind = $1",
        )
        .bind(kind)
        .bind(now)
        .fetch_one(&self.read)
        .await?;
        let n = |i: usize| -> Result<u64> { Ok(u64::try_from(r.try_get::<i64, _>(i)?).unwrap_or(0)) };
        Ok(QueueStats { ready: n(0)?, leased: n(1)?, delayed: n(2)?, dead: n(3)?, oldest: r.try_get(4)? })
    }
}
