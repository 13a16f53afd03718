//! `embed_ext`: the example's own extension — a sync op, an async op and a
//! resource with `close()`. A crate of its own, so that both the example's
//! `build.rs` (to bake it) and its program (to run it) depend on it, the way
//! kiln's own extensions are a crate.

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;

use deno_core::OpState;
use deno_core::Resource;
use deno_core::ResourceId;
use deno_core::op2;

/// How many counters JS has closed (checked by the example).
#[derive(Default, Clone)]
pub struct ClosedCounters(pub Rc<Cell<u32>>);

deno_core::extension!(
  embed_ext,
  deps = [kiln_runtime],
  ops = [op_embed_add, op_embed_delay, op_counter_open, op_counter_incr],
  esm_entry_point = "ext:embed_ext/embed.ts",
  esm = [dir "ext_js", "embed.ts"],
  options = { closed: ClosedCounters },
  state = |state, options| {
    state.put(options.closed);
  },
);

#[derive(Debug, thiserror::Error, deno_error::JsError)]
pub enum EmbedError {
  #[class(type)]
  #[error("counter {0} is closed")]
  Closed(ResourceId),
}

/// Sync: adds two numbers.
#[op2(fast)]
fn op_embed_add(a: u32, b: u32) -> u32 {
  a.wrapping_add(b)
}

/// Async: resolves with `value` after `ms` milliseconds.
#[op2]
#[string]
async fn op_embed_delay(#[smi] ms: u32, #[string] value: String) -> String {
  tokio::time::sleep(std::time::Duration::from_millis(ms.into())).await;
  value
}

/// A counter held by JS as a resource id.
struct Counter {
  value: Cell<u32>,
  closed: ClosedCounters,
}

impl Resource for Counter {
  fn name(&self) -> Cow<'_, str> {
    "embedCounter".into()
  }

  fn close(self: Rc<Self>) {
    self.closed.0.set(self.closed.0.get() + 1);
  }
}

#[op2(fast)]
#[smi]
fn op_counter_open(state: &mut OpState) -> ResourceId {
  let closed = state.borrow::<ClosedCounters>().clone();
  state.resource_table.add(Counter {
    value: Cell::new(0),
    closed,
  })
}

#[op2(fast)]
fn op_counter_incr(state: &mut OpState, #[smi] rid: ResourceId) -> Result<u32, EmbedError> {
  let counter = state
    .resource_table
    .get::<Counter>(rid)
    .map_err(|_| EmbedError::Closed(rid))?;
  counter.value.set(counter.value.get() + 1);
  Ok(counter.value.get())
}
