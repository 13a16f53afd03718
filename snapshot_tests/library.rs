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
  let mut flipped = bytes.to_vec();
  let i = flipped.len() - 1000;
  flipped[i] ^= 0x40;
  assert!(matches!(
    load::thaw(&flipped, &expected),
    Err(ContainerError::CorruptPayload(_) | ContainerError::PayloadTruncated { .. })
  ));
  assert!(matches!(
    load::thaw(&bytes[..bytes.len() - 5000], &expected),
    Err(ContainerError::PayloadTruncated { .. } | ContainerError::CorruptPayload(_))
  ));
}
