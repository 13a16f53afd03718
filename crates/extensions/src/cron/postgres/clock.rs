//! Schedule time: the time cron schedules are read in, the same on every
//! host. Normally it is UTC wall time; under the test hook
//! `KILN_CRON_TEST_TIME_SCALE=k` it runs `k` times faster than wall time,
//! counted from the Unix epoch, so processes that agree on wall time agree
//! on tick boundaries too.

use std::time::Duration;
use std::time::SystemTime;
use std::time::UNIX_EPOCH;

use chrono::DateTime;
use chrono::TimeDelta;
use chrono::Utc;

use super::super::schedule::CronSchedule;

/// Test hook: how many times faster than wall time schedule time runs.
pub const TIME_SCALE_ENV: &str = "KILN_CRON_TEST_TIME_SCALE";

/// The calendar repeats every 28 years between 1901 and 2099 (10227 days,
/// exactly 1461 weeks, seven leap days). Scaled schedule time is far in the
/// future (the `cron` crate stops at 2100), so the next tick is computed in
/// the 28 years from 2000 and moved forward by whole cycles: minutes, hours
/// and weekdays stay exact; dates past 2099 follow the 2000-2027 calendar
/// (no skipped century leap days), which is fine for a test clock.
const CYCLE_DAYS: i64 = 10_227;
/// 2000-01-01T00:00:00Z.
const FOLD_START_SECS: i64 = 946_684_800;

/// Schedule time for one process.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScheduleClock {
  scale: f64,
}

impl Default for ScheduleClock {
  fn default() -> Self {
    ScheduleClock { scale: 1.0 }
  }
}

/// `KILN_CRON_TEST_TIME_SCALE` is not a positive number.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{TIME_SCALE_ENV} must be a positive number, got {0:?}")]
pub struct BadTimeScale(pub String);

impl ScheduleClock {
  /// A clock `scale` times faster than wall time.
  pub fn scaled(scale: f64) -> Result<Self, BadTimeScale> {
    if scale.is_finite() && scale > 0.0 {
      Ok(ScheduleClock { scale })
    } else {
      Err(BadTimeScale(scale.to_string()))
    }
  }

  /// The clock `KILN_CRON_TEST_TIME_SCALE` asks for (wall time when unset).
  pub fn from_env() -> Result<Self, BadTimeScale> {
    match std::env::var(TIME_SCALE_ENV) {
      Err(_) => Ok(Self::default()),
      Ok(v) => match v.trim().parse::<f64>() {
        Ok(scale) => Self::scaled(scale),
        Err(_) => Err(BadTimeScale(v)),
      },
    }
  }

  pub fn scale(&self) -> f64 {
    self.scale
  }

  /// Schedule time at wall time `wall`.
  pub fn at(&self, wall: SystemTime) -> DateTime<Utc> {
    let since_epoch = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let ms = (since_epoch.as_secs_f64() * 1000.0 * self.scale) as i64;
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
  }

  /// Schedule time now.
  pub fn now(&self) -> DateTime<Utc> {
    self.at(SystemTime::now())
  }

  /// The first tick of `schedule` strictly after `t` (schedule time).
  pub fn next_tick(&self, schedule: &CronSchedule, t: &DateTime<Utc>) -> Option<DateTime<Utc>> {
    let cycle = TimeDelta::days(CYCLE_DAYS);
    let cycles = (t.timestamp() - FOLD_START_SECS).div_euclid(cycle.num_seconds());
    if cycles <= 0 {
      return schedule.next_after(t);
    }
    let shift = cycle.checked_mul(i32::try_from(cycles).ok()?)?;
    let folded = t.checked_sub_signed(shift)?;
    schedule.next_after(&folded)?.checked_add_signed(shift)
  }

  /// Wall time from `now` until schedule time reaches `tick` (zero if it
  /// has).
  pub fn wall_until(&self, tick: &DateTime<Utc>, now: &DateTime<Utc>) -> Duration {
    (*tick - *now)
      .to_std()
      .map(|d| d.div_f64(self.scale))
      .unwrap_or_default()
  }

  /// A delay in schedule time (a backoff), as wall time.
  pub fn wall(&self, schedule_ms: u32) -> Duration {
    Duration::from_millis(u64::from(schedule_ms)).div_f64(self.scale)
  }
}

#[cfg(test)]
mod tests {
  use chrono::TimeZone;

  use super::*;

  fn schedule(expr: &str) -> CronSchedule {
    CronSchedule::parse(expr).unwrap()
  }

  #[test]
  fn unscaled_is_wall_time() {
    let clock = ScheduleClock::default();
    let wall = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
    assert_eq!(clock.at(wall).timestamp_millis(), 1_764_000_000_123);
    let t = Utc.with_ymd_and_hms(2026, 11, 30, 10, 0, 30).unwrap();
    assert_eq!(
      clock.next_tick(&schedule("* * * * *"), &t),
      Some(Utc.with_ymd_and_hms(2026, 11, 30, 10, 1, 0).unwrap())
    );
  }

  #[test]
  fn scaled_time_counts_from_the_epoch() {
    let clock = ScheduleClock::scaled(60.0).unwrap();
    // One wall second is one schedule minute, for every process alike.
    let wall = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
    assert_eq!(clock.at(wall).timestamp(), 1_764_000_000 * 60);
    let later = clock.at(wall + Duration::from_secs(1));
    assert_eq!((later - clock.at(wall)).num_seconds(), 60);
    assert_eq!(clock.wall(60_000), Duration::from_secs(1));
    let now = clock.at(wall + Duration::from_millis(250));
    let tick = clock.next_tick(&schedule("* * * * *"), &now).unwrap();
    assert_eq!(tick, clock.at(wall + Duration::from_secs(1)));
    assert_eq!(clock.wall_until(&tick, &now), Duration::from_millis(750));
  }

  #[test]
  fn far_future_ticks_keep_minutes_and_weekdays() {
    // Year 5324: beyond the cron crate's years, folded by 28-year cycles.
    let clock = ScheduleClock::default();
    let t = Utc.with_ymd_and_hms(5324, 3, 14, 10, 7, 0).unwrap();
    let every_five = clock.next_tick(&schedule("*/5 * * * *"), &t).unwrap();
    assert_eq!(
      every_five,
      Utc.with_ymd_and_hms(5324, 3, 14, 10, 10, 0).unwrap()
    );
    // Weekdays come out right: 2000-01-01 and the folded date share one.
    let monday = clock.next_tick(&schedule("0 0 * * MON"), &t).unwrap();
    assert_eq!(chrono::Datelike::weekday(&monday), chrono::Weekday::Mon);
    assert!(monday > t && monday - t <= TimeDelta::days(7));
  }

  #[test]
  fn bad_scales_are_refused() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
      assert!(ScheduleClock::scaled(bad).is_err(), "{bad}");
    }
  }
}
