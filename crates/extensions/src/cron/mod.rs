//! `kiln_cron`: `Deno.cron`, the model extension (ops, resource, handler
//! traits, local backend; glue in `ext_js/cron.ts`).
//!
//! The ops validate what belongs to every backend (names, backoff schedules,
//! schedule syntax) and delegate the rest to the handler given at runtime
//! init. The handler is run-time configuration: never baked.

pub mod interface;
pub mod local;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod schedule;

use std::borrow::Cow;
use std::cell::RefCell;
use std::rc::Rc;

use deno_core::OpState;
use deno_core::Resource;
use deno_core::ResourceId;
use deno_core::op2;

pub use interface::CronError;
pub use interface::CronHandle;
pub use interface::CronHandler;
pub use interface::CronSpec;
pub use local::LocalCronHandler;

/// Longest job name, in characters.
pub const MAX_NAME_LEN: usize = 64;
/// Most retry delays a backoff schedule may list.
pub const MAX_BACKOFF_ENTRIES: usize = 5;
/// Longest retry delay, in ms (one hour).
pub const MAX_BACKOFF_MS: u32 = 3_600_000;

deno_core::extension!(
  kiln_cron,
  deps = [kiln_runtime],
  parameters = [C: CronHandler],
  ops = [op_cron_create<C>, op_cron_next<C>, op_cron_validate],
  esm_entry_point = "ext:kiln_cron/cron.ts",
  esm = [dir "../../ext_js", "cron.ts"],
  options = { handler: C },
  state = |state, options| {
    state.put(Rc::new(options.handler));
  },
);

/// A job handle in the resource table; closing it closes the job.
pub struct CronResource<H: CronHandle> {
  handle: Rc<H>,
}

impl<H: CronHandle + 'static> Resource for CronResource<H> {
  fn name(&self) -> Cow<'_, str> {
    "cron".into()
  }

  fn close(self: Rc<Self>) {
    self.handle.close();
  }
}

/// Checks what every backend requires of a job.
pub fn validate(spec: &CronSpec) -> Result<(), CronError> {
  let len = spec.name.chars().count();
  if len > MAX_NAME_LEN {
    return Err(CronError::NameTooLong(len));
  }
  if !spec
    .name
    .chars()
    .all(|c| c.is_ascii_alphanumeric() || c.is_whitespace() || c == '-' || c == '_')
  {
    return Err(CronError::InvalidName);
  }
  if let Some(backoff) = &spec.backoff_schedule
    && (backoff.len() > MAX_BACKOFF_ENTRIES || backoff.iter().any(|&ms| ms > MAX_BACKOFF_MS))
  {
    return Err(CronError::InvalidBackoffSchedule);
  }
  schedule::CronSchedule::parse(&spec.schedule)?;
  Ok(())
}

#[op2]
#[smi]
fn op_cron_create<C: CronHandler + 'static>(
  state: &mut OpState,
  #[string] name: String,
  #[string] schedule: String,
  #[serde] backoff_schedule: Option<Vec<u32>>,
) -> Result<ResourceId, CronError> {
  let spec = CronSpec {
    name,
    schedule,
    backoff_schedule,
  };
  validate(&spec)?;
  let handler = state.borrow::<Rc<C>>().clone();
  let handle = handler.create(spec)?;
  Ok(state.resource_table.add(CronResource {
    handle: Rc::new(handle),
  }))
}

/// Checks a job without creating it: for jobs declared while user code is
/// baked into a snapshot, which start at launch.
#[op2]
fn op_cron_validate(
  #[string] name: String,
  #[string] schedule: String,
  #[serde] backoff_schedule: Option<Vec<u32>>,
) -> Result<(), CronError> {
  validate(&CronSpec {
    name,
    schedule,
    backoff_schedule,
  })
}

#[op2]
async fn op_cron_next<C: CronHandler + 'static>(
  state: Rc<RefCell<OpState>>,
  #[smi] rid: ResourceId,
  prev_success: bool,
) -> Result<bool, CronError> {
  // A closed or unknown job has no next run.
  let handle = match state
    .borrow()
    .resource_table
    .get::<CronResource<C::Handle>>(rid)
  {
    Ok(resource) => resource.handle.clone(),
    Err(_) => return Ok(false),
  };
  handle.next(prev_success).await
}

#[cfg(test)]
mod tests {
  use super::*;

  fn spec(name: &str, schedule: &str, backoff: Option<Vec<u32>>) -> CronSpec {
    CronSpec {
      name: name.into(),
      schedule: schedule.into(),
      backoff_schedule: backoff,
    }
  }

  #[test]
  fn names() {
    assert_eq!(validate(&spec("my job-1_x", "* * * * *", None)), Ok(()));
    assert_eq!(validate(&spec(&"a".repeat(64), "* * * * *", None)), Ok(()));
    assert_eq!(
      validate(&spec(&"a".repeat(65), "* * * * *", None)),
      Err(CronError::NameTooLong(65))
    );
    for bad in ["a/b", "a.b", "caf\u{e9}", "emoji\u{1f600}"] {
      assert_eq!(
        validate(&spec(bad, "* * * * *", None)),
        Err(CronError::InvalidName),
        "{bad}"
      );
    }
  }

  #[test]
  fn backoff_schedules() {
    let ok = |b: Vec<u32>| validate(&spec("n", "* * * * *", Some(b)));
    assert_eq!(ok(vec![]), Ok(()));
    assert_eq!(ok(vec![1, 2, 3, 4, MAX_BACKOFF_MS]), Ok(()));
    assert_eq!(
      ok(vec![1, 2, 3, 4, 5, 6]),
      Err(CronError::InvalidBackoffSchedule)
    );
    assert_eq!(
      ok(vec![MAX_BACKOFF_MS + 1]),
      Err(CronError::InvalidBackoffSchedule)
    );
  }

  #[test]
  fn schedules() {
    assert_eq!(
      validate(&spec("n", "0 0 31 FEB *", None)),
      Err(CronError::InvalidSchedule)
    );
    assert_eq!(validate(&spec("n", "0 0 29 FEB *", None)), Ok(()));
  }
}
