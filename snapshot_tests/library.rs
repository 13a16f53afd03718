//! The embedding API in-process, from the embedded snapshot.

use kiln::snapshot::container::ContainerError;
use kiln::snapshot::load;

fn with_tokio<T>(f: impl std::future::Future<Output = T>) -> T {
  tokio::runtime::Builder::new_current_thread()
    .enable_all()
    .build()
    .unwrap()
    .block_on(f)
}

#[test]
fn runtime_executes_scripts_from_the_snapshot() {
  with_tokio(async {
    let mut rt = kiln::Runtime::new(kiln::RuntimeOptions {
      args: vec!["a".into()],
      ..Default::default()
    })
    .unwrap();
    assert_eq!(rt.execute_script("1 + 1").unwrap(), "2");
    assert_eq!(rt.execute_script("Deno.args.join(',')").unwrap(), "a");
    assert_eq!(rt.execute_script("typeof Deno.core").unwrap(), "undefined");
    assert_eq!(
      rt.execute_script("new URL('https://x.dev/p').pathname")
        .unwrap(),
      "/p"
    );
    let err = rt
      .execute_script("throw new TypeError('nope')")
      .unwrap_err();
    assert!(err.to_string().contains("TypeError: nope"), "{err}");
    // The runtime survives a thrown error.
    assert_eq!(rt.execute_script("40 + 2").unwrap(), "42");
  });
}

#[test]
fn many_runtimes_share_one_thawed_snapshot() {
  with_tokio(async {
    for i in 0..3 {
      let mut rt = kiln::Runtime::new(kiln::RuntimeOptions::default()).unwrap();
      assert_eq!(
        rt.execute_script(&format!("{i} * 2")).unwrap(),
        (i * 2).to_string()
      );
    }
  });
}

#[test]
fn snapshot_baked_for_another_extension_set_is_refused() {
  let mut other = kiln::runtime::expected_manifest();
  other
    .extensions
    .push(("my_extension".into(), vec!["op_mine".into()]));
  let err = load::thaw(load::EMBEDDED_SNAPSHOT, &other).unwrap_err();
  assert!(
    matches!(err, ContainerError::FingerprintMismatch { .. }),
    "{err}"
  );
  let text = err.to_string();
  assert!(
    text.starts_with("snapshot fingerprint mismatch: baked for "),
    "{text}"
  );
  assert!(text.contains("this binary expects"), "{text}");
}

#[test]
fn embedded_snapshot_matches_this_binary() {
  let raw = load::thaw(load::EMBEDDED_SNAPSHOT, &kiln::runtime::expected_manifest()).unwrap();
  assert!(raw.len() > 100_000);
}

#[test]
fn corrupt_embedded_bytes_give_errors_not_panics() {
  let expected = kiln::runtime::expected_manifest();
  let bytes = load::EMBEDDED_SNAPSHOT;
  assert!(matches!(
    load::thaw(&bytes[..10], &expected),
    Err(ContainerError::HeaderTruncated { .. })
  ));
  // The frame ends with its content checksum: a flipped bit there is always
  // caught. (A single flipped bit elsewhere is not always visible to zstd,
  // and bakes are not byte-identical, so the test must not depend on where.)
  let mut flipped = bytes.to_vec();
  let last = flipped.len() - 1;
  flipped[last] ^= 0x40;
  let mut scrambled = bytes.to_vec();
  let middle = scrambled.len() / 2;
  for b in &mut scrambled[middle..middle + 64] {
    *b = b.wrapping_mul(31).wrapping_add(7);
  }
  for corrupt in [flipped, scrambled] {
    let result = load::thaw(&corrupt, &expected).map(|raw| raw.len());
    assert!(
      matches!(
        result,
        Err(ContainerError::CorruptPayload(_) | ContainerError::PayloadTruncated { .. })
      ),
      "{result:?}"
    );
  }
  assert!(matches!(
    load::thaw(&bytes[..bytes.len() - 5000], &expected),
    Err(ContainerError::PayloadTruncated { .. } | ContainerError::CorruptPayload(_))
  ));
}

/// A cron backend that runs every job exactly once, immediately.
#[derive(Default, Clone)]
struct RunOnceHandler {
  created: std::rc::Rc<std::cell::RefCell<Vec<String>>>,
}

struct RunOnceHandle {
  ran: std::cell::Cell<bool>,
}

impl kiln::extensions::cron::CronHandler for RunOnceHandler {
  type Handle = RunOnceHandle;
  fn create(
    &self,
    spec: kiln::extensions::cron::CronSpec,
  ) -> Result<RunOnceHandle, kiln::extensions::cron::CronError> {
    self
      .created
      .borrow_mut()
      .push(format!("{} @ {}", spec.name, spec.schedule));
    Ok(RunOnceHandle {
      ran: std::cell::Cell::new(false),
    })
  }
}

impl kiln::extensions::cron::CronHandle for RunOnceHandle {
  async fn next(&self, _prev_success: bool) -> Result<bool, kiln::extensions::cron::CronError> {
    Ok(!self.ran.replace(true))
  }
  fn close(&self) {}
}

#[test]
fn a_cron_backend_is_run_time_configuration() {
  with_tokio(async {
    let handler = RunOnceHandler::default();
    let mut rt = kiln::Runtime::builder()
      .cron_handler(handler.clone())
      .build()
      .unwrap();
    rt.execute_script("Deno.cron('backend test', '0 0 1 1 *', () => { globalThis.ran = (globalThis.ran ?? 0) + 1; })")
      .unwrap();
    rt.run_event_loop().await.unwrap();
    assert_eq!(rt.execute_script("globalThis.ran").unwrap(), "1");
    assert_eq!(
      *handler.created.borrow(),
      vec!["backend test @ 0 0 1 1 *".to_string()]
    );
  });
}

#[test]
fn a_runtime_with_extensions_that_were_not_baked_is_refused() {
  with_tokio(async {
    let extra = deno_core::Extension {
      name: "not_baked",
      ..Default::default()
    };
    let err = match kiln::Runtime::builder().extension(extra).build() {
      Ok(_) => panic!("a runtime with an unbaked extension must be refused"),
      Err(e) => e,
    };
    assert!(
      matches!(
        err,
        kiln::Error::Snapshot(ContainerError::FingerprintMismatch { .. })
      ),
      "{err}"
    );
    let baked = kiln::extensions::all(Default::default()).len();
    let expected = format!("first difference: {baked} extensions vs {}", baked + 1);
    assert!(err.to_string().contains(&expected), "{err}");
  });
}
