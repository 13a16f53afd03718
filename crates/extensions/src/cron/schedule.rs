//! Five-field cron schedules (UTC) with Vixie cron semantics, on top of the
//! `cron` crate.
//!
//! The crate wants a seconds field and ANDs day-of-month with day-of-week;
//! Vixie cron (and Deno) run on a day that matches *either* when both are
//! restricted. We adapt rather than fork: add a seconds field, and for the OR
//! case keep two crate schedules (one per day field) and take the earlier
//! next run.

use std::str::FromStr;

use chrono::DateTime;
use chrono::Utc;

use super::interface::CronError;

/// A parsed, satisfiable schedule.
#[derive(Debug, Clone)]
pub struct CronSchedule {
  primary: cron::Schedule,
  /// Set when both day fields are restricted: the day-of-week half of the OR.
  alternate: Option<cron::Schedule>,
}

/// Characters a field may contain: numbers, month and weekday names, `*`,
/// lists, ranges and steps.
fn valid_field(field: &str) -> bool {
  !field.is_empty()
    && field
      .chars()
      .all(|c| c.is_ascii_alphanumeric() || matches!(c, '*' | ',' | '-' | '/'))
}

/// Vixie cron treats a day field starting with `*` as unrestricted.
fn restricted(field: &str) -> bool {
  !field.starts_with('*')
}

fn crate_schedule(
  minute: &str,
  hour: &str,
  dom: &str,
  month: &str,
  dow: &str,
) -> Result<cron::Schedule, CronError> {
  cron::Schedule::from_str(&format!("0 {minute} {hour} {dom} {month} {dow} *"))
    .map_err(|_| CronError::InvalidSchedule)
}

impl CronSchedule {
  /// Parses `minute hour day-of-month month day-of-week`. A schedule that can
  /// never fire (`0 0 31 FEB *`) is invalid.
  pub fn parse(expr: &str) -> Result<Self, CronError> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let [minute, hour, dom, month, dow] = fields[..] else {
      return Err(CronError::InvalidSchedule);
    };
    if !fields.iter().all(|f| valid_field(f)) {
      return Err(CronError::InvalidSchedule);
    }
    let schedule = if restricted(dom) && restricted(dow) {
      CronSchedule {
        primary: crate_schedule(minute, hour, dom, month, "*")?,
        alternate: Some(crate_schedule(minute, hour, "*", month, dow)?),
      }
    } else {
      CronSchedule {
        primary: crate_schedule(minute, hour, dom, month, dow)?,
        alternate: None,
      }
    };
    // The crate searches a bounded range of years, so this cannot hang.
    if schedule
      .next_after(&DateTime::<Utc>::from_timestamp(0, 0).unwrap_or_default())
      .is_none()
    {
      return Err(CronError::InvalidSchedule);
    }
    Ok(schedule)
  }

  /// The first run strictly after `t`.
  pub fn next_after(&self, t: &DateTime<Utc>) -> Option<DateTime<Utc>> {
    let primary = self.primary.after(t).next();
    let alternate = self.alternate.as_ref().and_then(|s| s.after(t).next());
    match (primary, alternate) {
      (Some(a), Some(b)) => Some(a.min(b)),
      (a, b) => a.or(b),
    }
  }
}

#[cfg(test)]
mod tests {
  use chrono::TimeZone;

  use super::*;

  fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
  }

  fn next(expr: &str, after: DateTime<Utc>) -> DateTime<Utc> {
    CronSchedule::parse(expr)
      .unwrap_or_else(|e| panic!("{expr}: {e}"))
      .next_after(&after)
      .unwrap()
  }

  #[test]
  fn every_minute_is_the_next_whole_minute_utc() {
    let t = Utc.with_ymd_and_hms(2026, 11, 25, 10, 30, 15).unwrap();
    assert_eq!(next("* * * * *", t), at(2026, 11, 25, 10, 31));
  }

  #[test]
  fn lists_ranges_and_steps() {
    let t = at(2026, 1, 1, 0, 0);
    assert_eq!(next("*/15 * * * *", t), at(2026, 1, 1, 0, 15));
    assert_eq!(next("5,10 * * * *", t), at(2026, 1, 1, 0, 5));
    assert_eq!(next("0 9-17 * * *", t), at(2026, 1, 1, 9, 0));
    assert_eq!(
      next("0 1-10/3 * * *", at(2026, 1, 1, 1, 0)),
      at(2026, 1, 1, 4, 0)
    );
    assert_eq!(
      next("10/20 * * * *", at(2026, 1, 1, 0, 11)),
      at(2026, 1, 1, 0, 30)
    );
  }

  #[test]
  fn month_and_weekday_names_any_case() {
    let t = at(2026, 1, 1, 0, 0);
    assert_eq!(next("0 0 1 mar *", t), at(2026, 3, 1, 0, 0));
    assert_eq!(next("0 0 1 JUN-aug *", t), at(2026, 6, 1, 0, 0));
    // 2026-01-01 is a Thursday; the next Monday is the 5th.
    assert_eq!(next("0 0 * * mon", t), at(2026, 1, 5, 0, 0));
    assert_eq!(next("0 0 * * SAT,Sun", t), at(2026, 1, 3, 0, 0));
  }

  #[test]
  fn numeric_weekdays_count_from_sunday_as_one() {
    let t = at(2026, 1, 1, 0, 0); // Thursday
    assert_eq!(next("0 0 * * 1", t), at(2026, 1, 4, 0, 0)); // Sunday
    assert_eq!(next("0 0 * * 7", t), at(2026, 1, 3, 0, 0)); // Saturday
    assert_eq!(next("0 0 * * 2", t), at(2026, 1, 5, 0, 0)); // Monday
  }

  #[test]
  fn restricted_day_fields_are_ored() {
    // The 15th, or any Monday: Monday the 5th comes first.
    let t = at(2026, 1, 1, 0, 0);
    assert_eq!(next("0 0 15 * MON", t), at(2026, 1, 5, 0, 0));
    // After the last Monday before the 15th, the 15th (a Thursday) wins.
    assert_eq!(
      next("0 0 15 * MON", at(2026, 1, 12, 0, 0)),
      at(2026, 1, 15, 0, 0)
    );
    // One day field unrestricted: plain AND.
    assert_eq!(next("0 0 15 * *", t), at(2026, 1, 15, 0, 0));
    assert_eq!(next("0 0 */2 * MON", t), at(2026, 1, 5, 0, 0));
  }

  #[test]
  fn leap_years() {
    assert_eq!(
      next("0 0 29 FEB *", at(2026, 1, 1, 0, 0)),
      at(2028, 2, 29, 0, 0)
    );
    assert_eq!(
      next("0 12 28-29 2 *", at(2027, 2, 28, 12, 0)),
      at(2028, 2, 28, 12, 0)
    );
  }

  #[test]
  fn impossible_and_malformed_schedules_are_invalid() {
    for expr in [
      "0 0 31 FEB *",
      "0 0 30 2 *",
      "",
      "* * * *",
      "* * * * * *",
      "60 * * * *",
      "* 24 * * *",
      "* * 0 * *",
      "* * * 13 *",
      "* * * * 0",
      "* * * * 8",
      "* * * * FOO",
      "? * * * *",
      "0 0 L * *",
      "* * * * 1#2",
    ] {
      assert_eq!(
        CronSchedule::parse(expr).err(),
        Some(CronError::InvalidSchedule),
        "{expr:?} should be invalid"
      );
    }
  }
}

/// The schedule parser must answer any string with a result, never a panic
/// (it reaches into the `cron` crate with whatever user code passes).
#[cfg(test)]
mod proptests {
  use proptest::prelude::*;

  use super::*;

  /// Parses and, when it parses, asks for the next run.
  fn exercise(expr: &str) {
    if let Ok(schedule) = CronSchedule::parse(expr) {
      let _ = schedule.next_after(&Utc::now());
    }
  }

  proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn arbitrary_strings_never_panic(expr in "\\PC{0,64}") {
      exercise(&expr);
    }

    #[test]
    fn cron_like_strings_never_panic(expr in "[0-9*,/ A-Za-z-]{0,40}") {
      exercise(&expr);
    }

    #[test]
    fn five_plausible_fields_never_panic(
      fields in proptest::collection::vec(
        "(\\*|[0-9]{1,12}|[A-Za-z]{3})([-/,](\\*|[0-9]{1,12}|[A-Za-z]{3})){0,3}",
        5,
      ),
    ) {
      exercise(&fields.join(" "));
    }
  }
}
