//! The cron store's tables and statements.
//!
//! `kiln_cron_runs` holds one row per run attempt: the history an operator
//! queries, and the claims and leases the fleet coordinates with. States:
//! `running` (held by `host` until `lease_until`), `waiting` (a retry due at
//! `due_at`, held the same way), `succeeded`, `failed`, `abandoned` (its
//! host went away mid-run more than [`MAX_TAKEOVERS`] times: a run that
//! takes its host down is not tried forever), `closed` (the job was closed,
//! its signal aborted, while the run was in progress or the retry waiting:
//! the run went on to its end there, its outcome unreported). The tables live in
//! the connection's schema (its `search_path`), prefixed `kiln_cron_`;
//! `kiln_cron_schema` holds their version.

use super::CronStoreError;
use super::SCHEMA_VERSION;

/// Each migration, in order; the schema version is how many have run.
pub(crate) const MIGRATIONS: [&str; 1] = [r#"
  CREATE TABLE kiln_cron_runs (
    function    text        NOT NULL,
    job         text        NOT NULL,
    tick        timestamptz NOT NULL,
    attempt     integer     NOT NULL,
    state       text        NOT NULL
                CHECK (state IN ('waiting', 'running', 'succeeded', 'failed', 'abandoned', 'closed')),
    host        text,
    claimed_at  timestamptz NOT NULL DEFAULT now(),
    due_at      timestamptz,
    started_at  timestamptz,
    finished_at timestamptz,
    lease_until timestamptz,
    takeovers   integer     NOT NULL DEFAULT 0,
    PRIMARY KEY (function, job, tick, attempt)
  );
  CREATE INDEX kiln_cron_runs_active ON kiln_cron_runs (function, job)
    WHERE state IN ('waiting', 'running');
  CREATE INDEX kiln_cron_runs_held ON kiln_cron_runs (host)
    WHERE state IN ('waiting', 'running');
"#];

/// Serialises migrations of concurrent processes (an arbitrary constant).
const MIGRATION_LOCK: i64 = 0x6b69_6c6e_6372_6f6e;

/// Creates or upgrades the tables, once per process, under an advisory
/// lock so hosts starting together do not race.
pub(crate) async fn migrate(
  client: &mut deadpool_postgres::Object,
  address: &str,
) -> Result<(), CronStoreError> {
  let database = |e: tokio_postgres::Error| CronStoreError::Database {
    address: address.to_string(),
    reason: super::describe(&e),
  };
  let tx = client.transaction().await.map_err(database)?;
  tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
    .await
    .map_err(database)?;
  tx.batch_execute("CREATE TABLE IF NOT EXISTS kiln_cron_schema (version integer NOT NULL)")
    .await
    .map_err(database)?;
  let found: Option<i32> = tx
    .query_opt("SELECT max(version) FROM kiln_cron_schema", &[])
    .await
    .map_err(database)?
    .and_then(|row| row.get(0));
  let found = found.unwrap_or(0);
  if found > SCHEMA_VERSION {
    return Err(CronStoreError::SchemaTooNew {
      address: address.to_string(),
      found,
    });
  }
  let from = usize::try_from(found).unwrap_or(0);
  for migration in &MIGRATIONS[from..] {
    tx.batch_execute(migration).await.map_err(database)?;
  }
  if found < SCHEMA_VERSION {
    tx.execute("DELETE FROM kiln_cron_schema", &[])
      .await
      .map_err(database)?;
    tx.execute(
      "INSERT INTO kiln_cron_schema (version) VALUES ($1)",
      &[&SCHEMA_VERSION],
    )
    .await
    .map_err(database)?;
  }
  tx.commit().await.map_err(database)
}

/// Claims the first attempt of a tick: ($1 function, $2 job, $3 tick,
/// $4 host, $5 lease ms) → (won, tick of a run of the job in progress).
/// Nothing is inserted while a run or retry of the job is in progress, and
/// of processes claiming the same tick one inserts, the others conflict.
pub(crate) const CLAIM: &str = r#"
  WITH busy AS (
    SELECT tick FROM kiln_cron_runs
     WHERE function = $1::text AND job = $2::text AND state IN ('waiting', 'running')
     LIMIT 1
  ), claimed AS (
    INSERT INTO kiln_cron_runs (function, job, tick, attempt, state, host, started_at, lease_until)
    SELECT $1::text, $2::text, $3::timestamptz, 0, 'running', $4::text, now(),
           now() + $5::float8 * interval '1 millisecond'
     WHERE NOT EXISTS (SELECT 1 FROM busy)
    ON CONFLICT DO NOTHING
    RETURNING 1
  )
  SELECT EXISTS (SELECT 1 FROM claimed), (SELECT tick FROM busy)
"#;

/// Runs taken over this many times are abandoned at the next expiry.
pub(crate) const MAX_TAKEOVERS: i32 = 3;

/// Takes over the oldest run of a job whose holder let go or stopped
/// renewing: ($1 function, $2 job, $3 host, $4 lease ms, $5 most
/// take-overs) → (tick, attempt, ms until a waiting retry is due, null for
/// a run). A running one starts again; a waiting one keeps its due time.
/// One taken over $5 times already is abandoned instead (no row).
pub(crate) const TAKE_OVER: &str = r#"
  WITH expired AS (
    SELECT function, job, tick, attempt, takeovers FROM kiln_cron_runs
     WHERE function = $1::text AND job = $2::text AND state IN ('waiting', 'running')
       AND (host IS NULL OR lease_until < now())
     ORDER BY tick, attempt
     LIMIT 1
     FOR UPDATE SKIP LOCKED
  ), abandoned AS (
    UPDATE kiln_cron_runs r
       SET state = 'abandoned', finished_at = now(), lease_until = NULL
      FROM expired
     WHERE (r.function, r.job, r.tick, r.attempt) = (expired.function, expired.job, expired.tick, expired.attempt)
       AND expired.takeovers >= $5::integer
  )
  UPDATE kiln_cron_runs r
     SET host = $3::text,
         takeovers = r.takeovers + 1,
         started_at = CASE WHEN r.state = 'running' THEN now() ELSE r.started_at END,
         lease_until = GREATEST(r.due_at, now()) + $4::float8 * interval '1 millisecond'
    FROM expired
   WHERE (r.function, r.job, r.tick, r.attempt) = (expired.function, expired.job, expired.tick, expired.attempt)
     AND expired.takeovers < $5::integer
  RETURNING r.tick, r.attempt,
            CASE WHEN r.state = 'waiting'
                 THEN (EXTRACT(EPOCH FROM (r.due_at - now())) * 1000)::float8 END
"#;

/// Records the end of a run this host holds and, when asked, inserts its
/// retry in the same statement: ($1 function, $2 job, $3 tick, $4 attempt,
/// $5 host, $6 state, $7 retry delay ms or null, $8 lease ms) → (the run
/// was still held here, a retry was inserted).
pub(crate) const FINISH: &str = r#"
  WITH done AS (
    UPDATE kiln_cron_runs
       SET state = $6::text, finished_at = now(), lease_until = NULL
     WHERE function = $1::text AND job = $2::text AND tick = $3::timestamptz
       AND attempt = $4::integer AND host = $5::text AND state = 'running'
    RETURNING 1
  ), retry AS (
    INSERT INTO kiln_cron_runs (function, job, tick, attempt, state, host, due_at, lease_until)
    SELECT $1::text, $2::text, $3::timestamptz, $4::integer + 1, 'waiting', $5::text,
           now() + $7::float8 * interval '1 millisecond',
           now() + ($7::float8 + $8::float8) * interval '1 millisecond'
     WHERE $7::float8 IS NOT NULL AND EXISTS (SELECT 1 FROM done)
    ON CONFLICT DO NOTHING
    RETURNING 1
  )
  SELECT EXISTS (SELECT 1 FROM done), EXISTS (SELECT 1 FROM retry)
"#;

/// Starts a waiting retry this host holds: ($1..$4 key, $5 host, $6 lease
/// ms) → one row updated, or none if it is held elsewhere now.
pub(crate) const START_WAITING: &str = r#"
  UPDATE kiln_cron_runs
     SET state = 'running', started_at = now(),
         lease_until = now() + $6::float8 * interval '1 millisecond'
   WHERE function = $1::text AND job = $2::text AND tick = $3::timestamptz
     AND attempt = $4::integer AND host = $5::text AND state = 'waiting'
"#;

/// Lets go of a run or retry this host holds: ($1..$4 key, $5 host).
pub(crate) const RELEASE: &str = r#"
  UPDATE kiln_cron_runs SET host = NULL, lease_until = now()
   WHERE function = $1::text AND job = $2::text AND tick = $3::timestamptz
     AND attempt = $4::integer AND host = $5::text AND state IN ('waiting', 'running')
"#;

/// Ends a run or retry of a job closed while this host held it: ($1..$4
/// key, $5 host).
pub(crate) const CLOSE: &str = r#"
  UPDATE kiln_cron_runs SET state = 'closed', finished_at = now(), lease_until = NULL
   WHERE function = $1::text AND job = $2::text AND tick = $3::timestamptz
     AND attempt = $4::integer AND host = $5::text AND state IN ('waiting', 'running')
"#;

/// Renews the leases of the runs this host's jobs hold: ($1 host, $2 lease
/// ms, $3..$6 arrays of their keys' columns).
pub(crate) const RENEW: &str = r#"
  UPDATE kiln_cron_runs r
     SET lease_until = GREATEST(r.due_at, now()) + $2::float8 * interval '1 millisecond'
    FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::integer[])
         AS held(function, job, tick, attempt)
   WHERE r.host = $1::text AND r.state IN ('waiting', 'running')
     AND (r.function, r.job, r.tick, r.attempt) = (held.function, held.job, held.tick, held.attempt)
"#;
