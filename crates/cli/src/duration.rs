//! Duration flags (`--idle-timeout 5m`).

use std::time::Duration;

/// Parses a duration flag: `250ms`, `30s`, `5m`, `1h`, or a bare number of
/// seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
  let text = text.trim();
  let split = text
    .find(|c: char| !c.is_ascii_digit())
    .unwrap_or(text.len());
  let (number, unit) = text.split_at(split);
  let n: u64 = number
    .parse()
    .map_err(|_| format!("invalid duration '{text}': expected e.g. 500ms, 30s, 5m, 1h"))?;
  match unit {
    "ms" => Ok(Duration::from_millis(n)),
    "" | "s" => Ok(Duration::from_secs(n)),
    "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
    "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
    _ => Err(format!(
      "invalid duration unit in '{text}': use ms, s, m or h"
    )),
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn durations() {
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert!(parse_duration("5 days").is_err());
    assert!(parse_duration("ms").is_err());
  }
}
