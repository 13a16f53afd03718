//! The host's counters, rendered as Prometheus text at `/_kiln/metrics`.
//!
//! Plain maps behind one mutex: updates are a few per request, far below
//! anything contention would show. Never blocks on I/O while locked.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::time::Duration;

/// Upper bounds (seconds) of the instance start-time histogram.
const START_BUCKETS: [f64; 11] = [
  0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
];

/// Why an instance was discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TerminationCause {
  /// A request ran past `--timeout-ms`.
  Timeout,
  /// The isolate reached `--max-heap-mb`.
  OutOfMemory,
  /// An uncaught error ended the isolate's event loop.
  UncaughtError,
  /// Idle longer than `--idle-timeout`.
  Idle,
  /// The function called `Deno.exit()`.
  Exit,
}

impl TerminationCause {
  pub fn label(self) -> &'static str {
    match self {
      TerminationCause::Timeout => "timeout",
      TerminationCause::OutOfMemory => "out_of_memory",
      TerminationCause::UncaughtError => "uncaught_error",
      TerminationCause::Idle => "idle",
      TerminationCause::Exit => "exit",
    }
  }
}

#[derive(Default)]
struct Histogram {
  buckets: [u64; START_BUCKETS.len()],
  count: u64,
  sum: f64,
}

#[derive(Default)]
struct Counters {
  requests: BTreeMap<(String, u16), u64>,
  in_flight: i64,
  live_instances: BTreeMap<String, i64>,
  starts: BTreeMap<(String, &'static str), u64>,
  start_seconds: BTreeMap<String, Histogram>,
  terminations: BTreeMap<(String, TerminationCause), u64>,
  cron_runs: BTreeMap<String, u64>,
  cron_failures: BTreeMap<String, u64>,
  cron_skips: BTreeMap<(String, &'static str), u64>,
  cron_takeovers: BTreeMap<String, u64>,
  cron_store_errors: u64,
  unhandled_errors: BTreeMap<String, u64>,
  websockets_open: BTreeMap<String, i64>,
  websockets: BTreeMap<(String, &'static str), u64>,
}

/// All metrics of one host.
#[derive(Default)]
pub struct Metrics {
  counters: Mutex<Counters>,
}

impl Metrics {
  fn with<R>(&self, f: impl FnOnce(&mut Counters) -> R) -> R {
    // A panic while holding the lock cannot leave the maps inconsistent
    // (each update is one insert), so a poisoned lock is still usable.
    let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
    f(&mut counters)
  }

  /// A request answered with `status`; `function` is `""` for requests that
  /// matched no function.
  pub fn request(&self, function: &str, status: u16) {
    self.with(|c| {
      *c.requests
        .entry((function.to_string(), status))
        .or_default() += 1
    });
  }

  pub fn in_flight_add(&self, delta: i64) {
    self.with(|c| c.in_flight += delta);
  }

  /// An instance started (`ok`) or failed to start, after `elapsed`.
  pub fn instance_start(&self, function: &str, ok: bool, elapsed: Duration) {
    self.with(|c| {
      let result = if ok { "ok" } else { "error" };
      *c.starts.entry((function.to_string(), result)).or_default() += 1;
      if ok {
        *c.live_instances.entry(function.to_string()).or_default() += 1;
        let h = c.start_seconds.entry(function.to_string()).or_default();
        let secs = elapsed.as_secs_f64();
        for (bucket, bound) in h.buckets.iter_mut().zip(START_BUCKETS) {
          if secs <= bound {
            *bucket += 1;
          }
        }
        h.count += 1;
        h.sum += secs;
      }
    });
  }

  /// An instance went away; `cause` is `None` for an orderly stop
  /// (shutdown).
  pub fn instance_stop(&self, function: &str, cause: Option<TerminationCause>) {
    self.with(|c| {
      *c.live_instances.entry(function.to_string()).or_default() -= 1;
      if let Some(cause) = cause {
        *c.terminations
          .entry((function.to_string(), cause))
          .or_default() += 1;
      }
    });
  }

  /// A cron job run finished.
  pub fn cron_run(&self, function: &str, success: bool) {
    self.with(|c| {
      *c.cron_runs.entry(function.to_string()).or_default() += 1;
      if !success {
        *c.cron_failures.entry(function.to_string()).or_default() += 1;
      }
    });
  }

  /// A cron tick of `function` not run here (`reason`: `claimed` by
  /// another host, or a run still in progress: `overlap`).
  pub fn cron_skip(&self, function: &str, reason: &'static str) {
    self.with(|c| {
      *c.cron_skips
        .entry((function.to_string(), reason))
        .or_default() += 1
    });
  }

  /// A cron run of `function` taken over from a host that stopped renewing
  /// its lease.
  pub fn cron_takeover(&self, function: &str) {
    self.with(|c| *c.cron_takeovers.entry(function.to_string()).or_default() += 1);
  }

  /// A statement or connection of the cron store failed.
  pub fn cron_store_error(&self) {
    self.with(|c| c.cron_store_errors += 1);
  }

  /// An error escaped a handler of `function` (logged, answered to no one).
  pub fn unhandled_error(&self, function: &str) {
    self.with(|c| *c.unhandled_errors.entry(function.to_string()).or_default() += 1);
  }

  /// A WebSocket of `function` opened (`+1`) or closed (`-1`).
  pub fn websocket_open(&self, function: &str, delta: i64) {
    self.with(|c| *c.websockets_open.entry(function.to_string()).or_default() += delta);
  }

  /// A WebSocket of `function` ended: `reason` is `closed` (either side
  /// closed it), `idle` (the host's idle timeout) or `failed` (the upgrade
  /// did not complete).
  pub fn websocket_end(&self, function: &str, reason: &'static str) {
    self.with(|c| {
      *c.websockets
        .entry((function.to_string(), reason))
        .or_default() += 1
    });
  }

  /// Prometheus text exposition format (version 0.0.4).
  pub fn render(&self) -> String {
    self.with(|c| {
      let mut out = String::new();
      family(
        &mut out,
        "kiln_requests_total",
        "counter",
        "Requests answered, by function and status.",
        c.requests
          .iter()
          .map(|((f, status), n)| (format!("{},status=\"{status}\"", label(f)), *n as f64)),
      );
      family(
        &mut out,
        "kiln_requests_in_flight",
        "gauge",
        "Requests being handled now.",
        [(String::new(), c.in_flight as f64)],
      );
      family(
        &mut out,
        "kiln_instances",
        "gauge",
        "Live isolate instances, by function.",
        c.live_instances.iter().map(|(f, n)| (label(f), *n as f64)),
      );
      family(
        &mut out,
        "kiln_instance_starts_total",
        "counter",
        "Instance starts, by function and result.",
        c.starts
          .iter()
          .map(|((f, result), n)| (format!("{},result=\"{result}\"", label(f)), *n as f64)),
      );
      header(
        &mut out,
        "kiln_instance_start_seconds",
        "histogram",
        "Time from instance start to serving: snapshot thaw, module load, handler set-up.",
      );
      for (function, h) in &c.start_seconds {
        let f = label(function);
        for (n, bound) in h.buckets.iter().zip(START_BUCKETS) {
          let _ = writeln!(
            out,
            "kiln_instance_start_seconds_bucket{{{f},le=\"{bound}\"}} {n}"
          );
        }
        let _ = writeln!(
          out,
          "kiln_instance_start_seconds_bucket{{{f},le=\"+Inf\"}} {}",
          h.count
        );
        let _ = writeln!(out, "kiln_instance_start_seconds_sum{{{f}}} {}", h.sum);
        let _ = writeln!(out, "kiln_instance_start_seconds_count{{{f}}} {}", h.count);
      }
      family(
        &mut out,
        "kiln_instance_terminations_total",
        "counter",
        "Instances discarded, by function and cause.",
        c.terminations.iter().map(|((f, cause), n)| {
          (
            format!("{},cause=\"{}\"", label(f), cause.label()),
            *n as f64,
          )
        }),
      );
      family(
        &mut out,
        "kiln_cron_runs_total",
        "counter",
        "Cron job runs, by function.",
        c.cron_runs.iter().map(|(f, n)| (label(f), *n as f64)),
      );
      family(
        &mut out,
        "kiln_cron_failures_total",
        "counter",
        "Cron job runs that threw, by function.",
        c.cron_failures.iter().map(|(f, n)| (label(f), *n as f64)),
      );
      family(
        &mut out,
        "kiln_cron_skips_total",
        "counter",
        "Cron ticks not run on this host (--cron-store), by function and reason (claimed: by another host; overlap: a run of the job was in progress).",
        c.cron_skips
          .iter()
          .map(|((f, reason), n)| (format!("{},reason=\"{reason}\"", label(f)), *n as f64)),
      );
      family(
        &mut out,
        "kiln_cron_takeovers_total",
        "counter",
        "Cron runs this host took over from a host whose lease expired, by function.",
        c.cron_takeovers.iter().map(|(f, n)| (label(f), *n as f64)),
      );
      family(
        &mut out,
        "kiln_cron_store_errors_total",
        "counter",
        "Failed statements and connections of the cron store.",
        [(String::new(), c.cron_store_errors as f64)],
      );
      family(
        &mut out,
        "kiln_unhandled_errors_total",
        "counter",
        "Errors that escaped a handler (unhandled rejections, throws in timers), by function.",
        c.unhandled_errors
          .iter()
          .map(|(f, n)| (label(f), *n as f64)),
      );
      family(
        &mut out,
        "kiln_websockets_open",
        "gauge",
        "Open WebSockets (each holds one instance), by function.",
        c.websockets_open.iter().map(|(f, n)| (label(f), *n as f64)),
      );
      family(
        &mut out,
        "kiln_websockets_total",
        "counter",
        "WebSockets ended, by function and how (closed, idle, failed).",
        c.websockets
          .iter()
          .map(|((f, how), n)| (format!("{},how=\"{how}\"", label(f)), *n as f64)),
      );
      out
    })
  }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
  let _ = writeln!(out, "# HELP {name} {help}");
  let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// One metric family: its header, then one line per (labels, value).
fn family(
  out: &mut String,
  name: &str,
  kind: &str,
  help: &str,
  samples: impl IntoIterator<Item = (String, f64)>,
) {
  header(out, name, kind, help);
  for (labels, value) in samples {
    if labels.is_empty() {
      let _ = writeln!(out, "{name} {value}");
    } else {
      let _ = writeln!(out, "{name}{{{labels}}} {value}");
    }
  }
}

/// The `function="..."` label.
fn label(function: &str) -> String {
  format!("function=\"{}\"", escape(function))
}

/// Escapes a label value (backslash, double quote, newline).
fn escape(value: &str) -> String {
  value
    .replace('\\', "\\\\")
    .replace('"', "\\\"")
    .replace('\n', "\\n")
}

impl kiln_extensions::cron::postgres::CronStoreEvents for Metrics {
  fn skipped(
    &self,
    function: &str,
    _job: &str,
    reason: kiln_extensions::cron::postgres::SkipReason,
  ) {
    self.cron_skip(function, reason.label());
  }

  fn took_over(&self, function: &str, _job: &str) {
    self.cron_takeover(function);
  }

  fn store_error(&self) {
    self.cron_store_error();
  }
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn renders_counters_and_histogram() {
    let m = Metrics::default();
    m.request("hello", 200);
    m.request("hello", 200);
    m.request("", 404);
    m.instance_start("hello", true, Duration::from_millis(3));
    m.instance_stop("hello", Some(TerminationCause::Timeout));
    m.cron_run("tick", true);
    m.cron_run("tick", false);
    m.cron_skip("tick", "claimed");
    m.cron_skip("tick", "claimed");
    m.cron_takeover("tick");
    m.cron_store_error();
    m.unhandled_error("hello");
    m.instance_start("quits", true, Duration::from_millis(3));
    m.instance_stop("quits", Some(TerminationCause::Exit));
    let text = m.render();
    assert!(text.contains("kiln_requests_total{function=\"hello\",status=\"200\"} 2\n"));
    assert!(text.contains("kiln_requests_total{function=\"\",status=\"404\"} 1\n"));
    assert!(
      text.contains("kiln_instance_start_seconds_bucket{function=\"hello\",le=\"0.0025\"} 0\n")
    );
    assert!(
      text.contains("kiln_instance_start_seconds_bucket{function=\"hello\",le=\"0.005\"} 1\n")
    );
    assert!(text.contains("kiln_instance_start_seconds_count{function=\"hello\"} 1\n"));
    assert!(
      text.contains("kiln_instance_terminations_total{function=\"hello\",cause=\"timeout\"} 1\n")
    );
    assert!(text.contains("kiln_cron_runs_total{function=\"tick\"} 2\n"));
    assert!(text.contains("kiln_cron_failures_total{function=\"tick\"} 1\n"));
    assert!(text.contains("kiln_cron_skips_total{function=\"tick\",reason=\"claimed\"} 2\n"));
    assert!(text.contains("kiln_cron_takeovers_total{function=\"tick\"} 1\n"));
    assert!(text.contains("kiln_cron_store_errors_total 1\n"));
    assert!(text.contains("kiln_instances{function=\"hello\"} 0\n"));
    assert!(text.contains("kiln_unhandled_errors_total{function=\"hello\"} 1\n"));
    assert!(
      text.contains("kiln_instance_terminations_total{function=\"quits\",cause=\"exit\"} 1\n")
    );
  }

  #[test]
  fn escapes_label_values() {
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
  }
}
