//! `Deno.cron` through the real binary, with the schedule offset hook.

use std::path::PathBuf;
use std::process::Output;

fn run_js(script: &str, offset_ms: Option<u64>) -> Output {
  let dir = tempfile::tempdir().unwrap();
  let file: PathBuf = dir.path().join("cron_test.ts");
  std::fs::write(&file, script).unwrap();
  let mut cmd = crate::kiln_command();
  cmd.arg("run").arg(&file);
  match offset_ms {
    Some(ms) => cmd.env("KILN_CRON_TEST_SCHEDULE_OFFSET", ms.to_string()),
    None => cmd.env_remove("KILN_CRON_TEST_SCHEDULE_OFFSET"),
  };
  cmd.output().unwrap()
}

fn ok_stdout(o: &Output) -> String {
  assert!(
    o.status.success(),
    "exit {:?}\nstdout: {}\nstderr: {}",
    o.status.code(),
    String::from_utf8_lossy(&o.stdout),
    String::from_utf8_lossy(&o.stderr)
  );
  String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn runs_repeat_and_abort_resolves_the_promise() {
  let o = run_js(
    r#"
      const ac = new AbortController();
      let runs = 0;
      const done = Deno.cron("repeat", "* * * * *", { signal: ac.signal }, () => {
        runs++;
        if (runs === 3) ac.abort();
      });
      console.log(done instanceof Promise);
      await done;
      console.log("resolved after", runs);
    "#,
    Some(20),
  );
  assert_eq!(ok_stdout(&o), "true\nresolved after 3\n");
}

#[test]
fn two_jobs_run_independently() {
  let o = run_js(
    r#"
      const a = new AbortController();
      const b = new AbortController();
      let ra = 0, rb = 0;
      const pa = Deno.cron("job-a", "*/5 * * * *", { signal: a.signal }, () => {
        if (++ra === 2) a.abort();
      });
      const pb = Deno.cron("job_b", { hour: { every: 2 } }, { signal: b.signal }, async () => {
        await new Promise((r) => setTimeout(r, 5));
        if (++rb === 4) b.abort();
      });
      await pa;
      console.log("a done", ra, rb < 4);
      await pb;
      console.log("b done", ra, rb);
    "#,
    Some(30),
  );
  assert_eq!(ok_stdout(&o), "a done 2 true\nb done 2 4\n");
}

#[test]
fn runs_of_one_job_never_overlap() {
  let o = run_js(
    r#"
      const ac = new AbortController();
      let running = 0, maxRunning = 0, runs = 0;
      await Deno.cron("slow", "* * * * *", { signal: ac.signal }, async () => {
        running++;
        maxRunning = Math.max(maxRunning, running);
        await new Promise((r) => setTimeout(r, 60));
        running--;
        if (++runs === 3) ac.abort();
      });
      console.log(runs, maxRunning);
    "#,
    Some(5),
  );
  assert_eq!(ok_stdout(&o), "3 1\n");
}

#[test]
fn failures_are_logged_and_retried_on_the_backoff_schedule() {
  let o = run_js(
    r#"
      const ac = new AbortController();
      const at: number[] = [];
      const done = Deno.cron("flaky", "* * * * *", { backoffSchedule: [10, 600], signal: ac.signal }, () => {
        at.push(performance.now());
        if (at.length === 4) { ac.abort(); return; }
        throw new Error("fail " + at.length);
      });
      await done; // never rejects
      const gaps = at.slice(1).map((t, i) => t - at[i]);
      // retry 1 after 10 ms, retry 2 after 600 ms, then back to the schedule (300 ms)
      console.log(gaps[0] < 150, gaps[1] >= 590, gaps[2] >= 290 && gaps[2] < 590);
    "#,
    Some(300),
  );
  assert_eq!(ok_stdout(&o), "true true true\n");
  let err = String::from_utf8_lossy(&o.stderr);
  assert_eq!(
    err.matches("Exception in cron handler flaky").count(),
    3,
    "{err}"
  );
  assert!(err.contains("fail 1") && err.contains("fail 3"), "{err}");
}

#[test]
fn empty_backoff_schedule_means_no_retries() {
  let o = run_js(
    r#"
      const ac = new AbortController();
      const at: number[] = [];
      await Deno.cron("noretry", "* * * * *", { backoffSchedule: [], signal: ac.signal }, async () => {
        at.push(performance.now());
        if (at.length === 3) ac.abort();
        throw new Error("always");
      });
      const gaps = at.slice(1).map((t, i) => t - at[i]);
      console.log(gaps.every((g) => g >= 190));
    "#,
    Some(200),
  );
  assert_eq!(ok_stdout(&o), "true\n");
}

#[test]
fn every_error_message_is_an_exact_type_error() {
  let o = run_js(
    r#"
      const h = () => {};
      const cases: [string, () => unknown][] = [
        ["no name", () => (Deno.cron as any)()],
        ["no schedule", () => (Deno.cron as any)("n")],
        ["no handler", () => (Deno.cron as any)("n", "* * * * *")],
        ["no handler with options", () => (Deno.cron as any)("n", "* * * * *", {})],
        ["two handlers", () => (Deno.cron as any)("n", "* * * * *", h, h)],
        ["long name", () => Deno.cron("x".repeat(65), "* * * * *", h)],
        ["bad name", () => Deno.cron("bad/name", "* * * * *", h)],
        ["bad schedule", () => Deno.cron("n", "not a schedule", h)],
        ["impossible", () => Deno.cron("n", "0 0 31 FEB *", h)],
        ["bad object", () => Deno.cron("n", { minute: { end: 5 } } as any, h)],
        ["six backoffs", () => Deno.cron("n", "* * * * *", { backoffSchedule: [1, 2, 3, 4, 5, 6] }, h)],
        ["backoff too long", () => Deno.cron("n", "* * * * *", { backoffSchedule: [3600001] }, h)],
        ["negative backoff", () => Deno.cron("n", "* * * * *", { backoffSchedule: [-1] }, h)],
      ];
      for (const [label, f] of cases) {
        try { f(); console.log(label, "did not throw"); }
        catch (e) { console.log(`${label}: ${(e as Error).constructor.name}: ${(e as Error).message}`); }
      }
      const ac = new AbortController();
      const p = Deno.cron("dup", "* * * * *", { signal: ac.signal }, h);
      try { Deno.cron("dup", "* * * * *", h); } catch (e) { console.log(`dup: ${(e as Error).constructor.name}: ${(e as Error).message}`); }
      ac.abort();
      await p;
      const again = new AbortController();
      const p2 = Deno.cron("dup", "* * * * *", { signal: again.signal }, h);
      console.log("name freed after close");
      again.abort();
      await p2;
    "#,
    None,
  );
  assert_eq!(
    ok_stdout(&o),
    "no name: TypeError: Cannot create cron job, a unique name is required: received 'undefined'\n\
     no schedule: TypeError: Cannot create cron job, a schedule is required: received 'undefined'\n\
     no handler: TypeError: Cannot create cron job: a handler is required\n\
     no handler with options: TypeError: Cannot create cron job: a handler is required\n\
     two handlers: TypeError: Cannot create cron job, a single handler is required: two handlers were specified\n\
     long name: TypeError: Cron name cannot exceed 64 characters: current length 65\n\
     bad name: TypeError: Invalid cron name: only alphanumeric characters, whitespace, hyphens, and underscores are allowed\n\
     bad schedule: TypeError: Invalid cron schedule\n\
     impossible: TypeError: Invalid cron schedule\n\
     bad object: TypeError: Invalid cron schedule\n\
     six backoffs: TypeError: Invalid backoff schedule\n\
     backoff too long: TypeError: Invalid backoff schedule\n\
     negative backoff: TypeError: Invalid backoff schedule\n\
     dup: TypeError: Cron with this name already exists\n\
     name freed after close\n"
  );
}

#[test]
fn at_most_101_crons_are_live() {
  let o = run_js(
    r#"
      const ac = new AbortController();
      const jobs: Promise<void>[] = [];
      for (let i = 0; i < 101; i++) {
        jobs.push(Deno.cron(`job ${i}`, "0 0 1 1 *", { signal: ac.signal }, () => {}));
      }
      console.log("101 live");
      try { Deno.cron("job 101", "0 0 1 1 *", () => {}); }
      catch (e) { console.log(`${(e as Error).constructor.name}: ${(e as Error).message}`); }
      ac.abort();
      await Promise.all(jobs);
      console.log("all closed");
    "#,
    None,
  );
  assert_eq!(
    ok_stdout(&o),
    "101 live\nTypeError: Too many crons\nall closed\n"
  );
}

#[test]
fn schedule_helpers_are_reachable_through_deno_internal() {
  let o = run_js(
    r#"
      const { formatToCronSchedule: f, parseScheduleToString: p } = (Deno as any)[Deno.internal];
      console.log(typeof Deno.internal);
      console.log([f(undefined), f(5), f({ exact: 3 }), f({ exact: [1, 2] }),
        f({ start: 1, end: 5, every: 2 }), f({ start: 1, end: 5 }), f({ start: 2, every: 3 }),
        f({ start: 4 }), f({ every: 15 })].join(" | "));
      console.log(p("1 2 3 4 5"));
      console.log(p({ hour: { every: 2 } }));
      console.log(p({ month: { every: 3 } }));
      console.log(p({ dayOfWeek: 2 }));
      console.log(p({ minute: { every: 10 }, dayOfMonth: { exact: [1, 15] } }));
      // Mixed given and missing fields, as Deno fills them in.
      console.log(p({ hour: { every: 3 }, month: { every: 2 } }));
      console.log(p({ hour: 4, dayOfWeek: 1 }));
      console.log(p({ dayOfMonth: 5, month: 2 }));
      console.log(p({ month: 2, dayOfWeek: 1 }));
      console.log(p({ minute: 7, month: 3 }));
      console.log(p({}));
    "#,
    None,
  );
  assert_eq!(
    ok_stdout(&o),
    "symbol\n\
     * | 5 | 3 | 1,2 | 1-5/2 | 1-5 | 2/3 | 4/1 | */15\n\
     1 2 3 4 5\n\
     0 */2 * * *\n\
     0 0 1 */3 *\n\
     0 0 * * 2\n\
     */10 * 1,15 * *\n\
     0 */3 * */2 *\n\
     0 4 * * 1\n\
     0 0 5 2 *\n\
     0 0 * 2 1\n\
     7 * * 3 *\n\
     * * * * *\n"
  );
}
