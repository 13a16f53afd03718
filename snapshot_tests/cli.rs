//! `kiln run` / `kiln snapshot info` through the real binary.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Output;

fn kiln() -> Command {
  crate::kiln_command()
}

fn run(args: &[&str]) -> Output {
  kiln().args(args).output().expect("spawn kiln")
}

fn stdout(o: &Output) -> String {
  String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
  String::from_utf8_lossy(&o.stderr).into_owned()
}

fn repo(path: &str) -> PathBuf {
  crate::repo_root().join(path)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
  let path = dir.join(name);
  std::fs::write(&path, text).unwrap();
  path
}

/// Asserts a failed run printed exactly one line to stderr, containing `needle`.
fn assert_one_line_error(o: &Output, needle: &str) {
  assert_eq!(o.status.code(), Some(1), "stderr: {}", stderr(o));
  let err = stderr(o);
  assert_eq!(
    err.trim_end().lines().count(),
    1,
    "expected one line, got: {err:?}"
  );
  assert!(err.starts_with("error: "), "{err:?}");
  assert!(err.contains(needle), "expected {needle:?} in {err:?}");
  assert!(!err.contains("panicked"), "{err:?}");
}

#[test]
fn hello_example_prints_expected_lines() {
  let o = run(&["run", repo("examples/hello.ts").to_str().unwrap()]);
  assert!(o.status.success(), "stderr: {}", stderr(&o));
  assert_eq!(
    stdout(&o),
    "Hello, kiln!\n\
     path=/hello query=snapshot\n\
     encoded 4 bytes: 107,105,108,110\n\
     timer fired after >= 10 ms: true\n"
  );
}

#[test]
fn args_exit_and_hidden_internals() {
  let dir = tempfile::tempdir().unwrap();
  let file = write(
    dir.path(),
    "main.js",
    r#"
      console.log(JSON.stringify(Deno.args));
      console.log(typeof Deno.core, typeof globalThis.__bootstrap, typeof globalThis.__kilnBootstrap);
      console.log(typeof Deno.version.kiln, Deno.version.v8.length > 0);
      Deno.exit(7);
      console.log("not reached");
    "#,
  );
  let o = run(&["run", file.to_str().unwrap(), "one", "--two"]);
  assert_eq!(o.status.code(), Some(7), "stderr: {}", stderr(&o));
  assert_eq!(
    stdout(&o),
    "[\"one\",\"--two\"]\nundefined undefined undefined\nstring true\n"
  );
}

#[test]
fn imports_dynamic_import_and_top_level_await() {
  let dir = tempfile::tempdir().unwrap();
  std::fs::create_dir(dir.path().join("lib")).unwrap();
  write(
    dir.path(),
    "lib/math.ts",
    "export function double(n: number): number { return n * 2; }\n",
  );
  write(dir.path(), "lib/plain.mjs", "export const plain = 'mjs';\n");
  write(dir.path(), "data.json", "{\"answer\": 42}\n");
  let main = write(
    dir.path(),
    "main.ts",
    r#"
      import { double } from "./lib/math.ts";
      import data from "./data.json" with { type: "json" };
      const { plain } = await import("./lib/plain.mjs");
      const abs = await import(new URL("./lib/math.ts", import.meta.url).href);
      await new Promise((r) => setTimeout(r, 5));
      console.log(double(21), plain, abs.double(2), data.answer);
    "#,
  );
  let o = run(&["run", main.to_str().unwrap()]);
  assert!(o.status.success(), "stderr: {}", stderr(&o));
  assert_eq!(stdout(&o), "42 mjs 4 42\n");
}

#[test]
fn uncaught_error_in_typescript_names_the_ts_file_and_line() {
  let dir = tempfile::tempdir().unwrap();
  // Type-only lines vanish in the emitted JS: only a source map gives line 9.
  let file = write(
    dir.path(),
    "boom.ts",
    "interface Shape {\n  kind: string;\n  size: number;\n}\ntype Id = string;\n\nfunction fail(shape: Shape): never {\n  const id: Id = shape.kind;\n  throw new Error(`boom ${id}`);\n}\nfail({ kind: \"x\", size: 1 });\n",
  );
  let o = run(&["run", file.to_str().unwrap()]);
  assert_eq!(o.status.code(), Some(1));
  let err = stderr(&o);
  assert!(err.contains("Error: boom x"), "{err}");
  assert!(
    err.contains("boom.ts:9:"),
    "stack should name the TS line: {err}"
  );
  assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn syntax_error_is_one_line() {
  let dir = tempfile::tempdir().unwrap();
  let file = write(dir.path(), "bad.ts", "const x: number = 1;\nconst y = ;\n");
  let o = run(&["run", file.to_str().unwrap()]);
  assert_one_line_error(&o, "SyntaxError");
  assert!(stderr(&o).contains("bad.ts:2:"), "{}", stderr(&o));
}

#[test]
fn syntax_error_in_an_imported_js_module_is_one_line() {
  let dir = tempfile::tempdir().unwrap();
  write(dir.path(), "dep.js", "export const = 1;\n");
  let file = write(dir.path(), "main.js", "import './dep.js';\n");
  let o = run(&["run", file.to_str().unwrap()]);
  assert_one_line_error(&o, "SyntaxError");
}

#[test]
fn missing_file_is_one_line() {
  let o = run(&["run", "/nonexistent/kiln/missing.ts"]);
  assert_one_line_error(&o, "module not found: /nonexistent/kiln/missing.ts");
}

#[test]
fn missing_import_is_one_line() {
  let dir = tempfile::tempdir().unwrap();
  let file = write(
    dir.path(),
    "main.ts",
    "import { x } from './nope.ts';\nconsole.log(x);\n",
  );
  let o = run(&["run", file.to_str().unwrap()]);
  assert_one_line_error(&o, "nope.ts");
}

#[test]
fn remote_imports_and_missing_packages_fail_in_one_line() {
  let dir = tempfile::tempdir().unwrap();
  for (name, spec, expected) in [
    (
      "npm.ts",
      "npm:left-pad",
      "cannot resolve 'npm:left-pad' from file://",
    ),
    (
      "http.ts",
      "http://example.com/x.js",
      "unsupported import 'http://example.com/x.js'",
    ),
    (
      "jsr.ts",
      "jsr:@std/path",
      "unsupported import 'jsr:@std/path'",
    ),
  ] {
    let file = write(
      dir.path(),
      name,
      &format!("import leftPad from '{spec}';\nconsole.log(leftPad);\n"),
    );
    let o = run(&["run", file.to_str().unwrap()]);
    assert_one_line_error(&o, expected);
  }
}

#[test]
fn snapshot_info_lists_every_extension() {
  let o = run(&["snapshot", "info"]);
  assert!(o.status.success(), "stderr: {}", stderr(&o));
  let out = stdout(&o);
  for needle in [
    "format version: 1",
    "fingerprint:",
    "deno_core:      0.413.0",
    "raw size:",
    "compressed:",
    "deno_webidl",
    "deno_web ",
    "kiln_runtime",
    "v8 blob:        15.",
    "  read-only ",
    "  context 1 ",
    "  deno_core sidecar ",
    ", read-only heap ",
  ] {
    assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
  }
  // V8's header and sections, deno_core's sidecar and the blob's 8-byte
  // length are the whole raw snapshot.
  let bytes_of = |line: &str| -> Option<usize> {
    let rest = line.strip_suffix(" bytes")?;
    rest.rsplit(' ').next()?.parse().ok()
  };
  let raw: usize = out
    .lines()
    .find_map(|l| l.strip_prefix("raw size:"))
    .and_then(|l| bytes_of(l.trim()))
    .expect("raw size line");
  let sections: usize = out
    .lines()
    .skip_while(|l| !l.starts_with("v8 blob:"))
    .skip(1)
    .filter_map(bytes_of)
    .sum();
  let contexts: usize = out
    .lines()
    .find_map(|l| l.strip_prefix("v8 blob:"))
    .and_then(|l| {
      l.split(", ")
        .nth(1)?
        .strip_suffix(" contexts")?
        .parse()
        .ok()
    })
    .expect("context count");
  // V8's header: 88 bytes, then one offset per context.
  let header = 88 + 4 * contexts;
  assert_eq!(
    header + sections + 8,
    raw,
    "sections do not add up in:\n{out}"
  );
  for (name, _) in kiln::runtime::expected_manifest().extensions {
    assert!(out.contains(&name), "missing extension {name} in:\n{out}");
  }
}

/// Puts `ext_js/` back even if the test fails.
struct Renamed {
  from: PathBuf,
  to: PathBuf,
}

impl Drop for Renamed {
  fn drop(&mut self) {
    let _ = std::fs::rename(&self.to, &self.from);
  }
}

#[test]
fn relocated_binary_runs_without_the_source_tree() {
  let dir = tempfile::tempdir().unwrap();
  let exe = dir.path().join("kiln");
  std::fs::copy(env!("CARGO_BIN_EXE_kiln"), &exe).unwrap();
  let script = write(
    dir.path(),
    "globals.ts",
    r#"
      const url = new URL("../b?q=1#h", "https://kiln.dev/a/c");
      const bytes = new TextEncoder().encode("h\u00e9");
      const text = new TextDecoder().decode(bytes);
      const ac = new AbortController();
      ac.abort();
      const cloned = structuredClone({ d: new Date(0), m: new Map([[1, 2]]) });
      const chunks: string[] = [];
      const rs = new ReadableStream<string>({ start(c) { c.enqueue("a"); c.enqueue("b"); c.close(); } });
      for await (const c of rs) chunks.push(c);
      let fired = false;
      const et = new EventTarget();
      et.addEventListener("ping", () => { fired = true; });
      et.dispatchEvent(new Event("ping"));
      await new Promise((r) => setTimeout(r, 5));
      console.log(url.href, bytes.length, text, ac.signal.aborted, cloned.m.get(1),
        chunks.join(""), fired, btoa("kiln"), typeof performance.now(), new Blob(["xy"]).size);
    "#,
  );
  let _tree = crate::lock_source_tree();
  let ext_js = repo("ext_js");
  let hidden = repo("ext_js.hidden-by-relocation-test");
  std::fs::rename(&ext_js, &hidden).unwrap();
  let _restore = Renamed {
    from: ext_js,
    to: hidden,
  };
  let o = Command::new(&exe)
    .current_dir(dir.path())
    .env("NO_COLOR", "1")
    .args(["run", "globals.ts"])
    .output()
    .unwrap();
  assert!(o.status.success(), "stderr: {}", stderr(&o));
  assert_eq!(
    stdout(&o),
    "https://kiln.dev/b?q=1#h 3 h\u{e9} true 2 ab true a2lsbg== number 2\n"
  );
  let _ = script;
}

#[test]
fn json_modules_need_the_import_attribute_and_bad_json_names_the_file() {
  let dir = tempfile::tempdir().unwrap();
  write(dir.path(), "data.json", "{\"answer\": 42}\n");
  write(dir.path(), "broken.json", "{\"answer\": 42,,}\n");
  let bare = write(
    dir.path(),
    "bare.ts",
    "import data from './data.json';\nconsole.log(data);\n",
  );
  let o = run(&["run", bare.to_str().unwrap()]);
  assert_one_line_error(&o, "JSON modules must be imported with { type: \"json\" }");
  assert!(stderr(&o).contains("data.json"), "{}", stderr(&o));

  let broken = write(
    dir.path(),
    "broken.ts",
    "import data from './broken.json' with { type: 'json' };\nconsole.log(data);\n",
  );
  let o = run(&["run", broken.to_str().unwrap()]);
  let path = dir.path().join("broken.json");
  assert_one_line_error(&o, &format!("invalid JSON in module {}", path.display()));
}

#[test]
fn special_files_are_refused_without_hanging_or_reading_them() {
  let dir = tempfile::tempdir().unwrap();
  std::os::unix::fs::symlink("/dev/zero", dir.path().join("zero.js")).unwrap();
  let fifo = dir.path().join("fifo.js");
  let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
  assert!(made.success());
  for name in ["zero.js", "fifo.js"] {
    let main = write(
      dir.path(),
      "main.ts",
      &format!("import './{name}';\nconsole.log('loaded');\n"),
    );
    // Nobody ever opens the FIFO for writing: a blocking open would hang.
    let started = std::time::Instant::now();
    let o = run(&["run", main.to_str().unwrap()]);
    assert!(
      started.elapsed() < std::time::Duration::from_secs(20),
      "{name} took {:?}",
      started.elapsed()
    );
    assert_one_line_error(&o, "not a regular file");
    assert!(stderr(&o).contains(name), "{}", stderr(&o));
  }
}

#[test]
fn modules_over_the_size_limit_are_refused() {
  let dir = tempfile::tempdir().unwrap();
  let big = format!("// {}\nexport const x = 1;\n", "x".repeat(16 << 20));
  write(dir.path(), "big.js", &big);
  let main = write(dir.path(), "main.ts", "import './big.js';\n");
  let o = run(&["run", main.to_str().unwrap()]);
  assert_one_line_error(&o, "larger than the limit of 16777216 bytes");
}

#[test]
fn output_into_a_closed_pipe_ends_quietly_by_sigpipe() {
  use std::io::Read;
  use std::os::unix::process::ExitStatusExt;
  use std::process::Stdio;

  let dir = tempfile::tempdir().unwrap();
  let main = write(
    dir.path(),
    "yes.ts",
    "while (true) console.log('y'.repeat(100));\n",
  );
  // As `kiln run yes.ts | head -c 10`: read 10 bytes, close the pipe.
  let mut child = kiln()
    .args(["run", main.to_str().unwrap()])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
  let mut stdout = child.stdout.take().unwrap();
  let mut head = [0u8; 10];
  stdout.read_exact(&mut head).unwrap();
  drop(stdout);
  let o = child.wait_with_output().unwrap();
  assert_eq!(&head, b"yyyyyyyyyy");
  assert_eq!(stderr(&o), "", "no error message");
  assert_eq!(o.status.signal(), Some(libc::SIGPIPE), "{:?}", o.status);
}

#[test]
fn deno_env_navigator_and_self() {
  let dir = tempfile::tempdir().unwrap();
  let main = write(
    dir.path(),
    "env.ts",
    r#"
      const out: unknown[] = [];
      out.push(Deno.env.get("KILN_TEST_VAR"), Deno.env.has("KILN_TEST_VAR"), Deno.env.get("KILN_NOPE"));
      Deno.env.set("KILN_SET", "x=y");
      out.push(Deno.env.get("KILN_SET"), Deno.env.toObject().KILN_TEST_VAR);
      Deno.env.delete("KILN_SET");
      out.push(Deno.env.has("KILN_SET"));
      try { Deno.env.get(""); } catch (e) { out.push(`${(e as Error).name}: ${(e as Error).message}`); }
      out.push(navigator.userAgent === `kiln/${Deno.version.kiln}`, navigator.hardwareConcurrency >= 1,
        navigator.language, self === globalThis);
      console.log(JSON.stringify(out));
    "#,
  );
  let o = kiln()
    .args(["run", main.to_str().unwrap()])
    .env("KILN_TEST_VAR", "hello")
    .env("LANG", "de_DE.UTF-8")
    .env_remove("LC_ALL")
    .env_remove("LC_MESSAGES")
    .output()
    .unwrap();
  assert!(o.status.success(), "stderr: {}", stderr(&o));
  assert_eq!(
    stdout(&o),
    "[\"hello\",true,null,\"x=y\",\"hello\",false,\"TypeError: Key is an empty string.\",true,true,\"de-DE\",true]\n"
  );
}

#[test]
fn web_crypto_known_answers() {
  let dir = tempfile::tempdir().unwrap();
  let main = write(
    dir.path(),
    "crypto.ts",
    r#"
      const enc = new TextEncoder();
      const hex = (b: ArrayBuffer) =>
        [...new Uint8Array(b)].map((x) => x.toString(16).padStart(2, "0")).join("");
      const out: string[] = [];
      out.push(hex(await crypto.subtle.digest("SHA-256", enc.encode("abc"))));
      // RFC 4231, test case 2.
      const hmac = await crypto.subtle.importKey(
        "raw", enc.encode("Jefe"), { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
      out.push(hex(await crypto.subtle.sign("HMAC", hmac, enc.encode("what do ya want for nothing?"))));
      const aes = await crypto.subtle.generateKey({ name: "AES-GCM", length: 256 }, true, ["encrypt", "decrypt"]);
      const iv = crypto.getRandomValues(new Uint8Array(12));
      const sealed = await crypto.subtle.encrypt({ name: "AES-GCM", iv }, aes, enc.encode("kiln secret"));
      out.push(new TextDecoder().decode(await crypto.subtle.decrypt({ name: "AES-GCM", iv }, aes, sealed)));
      const ec = await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
      const alg = { name: "ECDSA", hash: "SHA-256" };
      const sig = await crypto.subtle.sign(alg, ec.privateKey, enc.encode("msg"));
      out.push(String(await crypto.subtle.verify(alg, ec.publicKey, sig, enc.encode("msg"))));
      out.push(String(await crypto.subtle.verify(alg, ec.publicKey, sig, enc.encode("msh"))));
      const uuid = crypto.randomUUID();
      out.push(String(/^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/.test(uuid)));
      out.push(String(crypto instanceof Crypto && crypto.subtle instanceof SubtleCrypto && ec.publicKey instanceof CryptoKey));
      out.push(uuid + " " + hex(crypto.getRandomValues(new Uint8Array(8)).buffer));
      console.log(out.join("\n"));
    "#,
  );
  let launch = || {
    let o = run(&["run", main.to_str().unwrap()]);
    assert!(o.status.success(), "stderr: {}", stderr(&o));
    stdout(&o)
  };
  let first = launch();
  let lines: Vec<&str> = first.lines().collect();
  assert_eq!(
    lines[..7],
    [
      "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
      "kiln secret",
      "true",
      "false",
      "true",
      "true",
    ],
    "{first}"
  );
  // Randomness is the launch's own, never baked.
  let second = launch();
  assert_ne!(first.lines().last(), second.lines().last());
}

#[test]
fn code_cache_is_written_reused_and_a_damaged_one_replaced() {
  let dir = tempfile::tempdir().unwrap();
  let cache = dir.path().join("cache");
  let mut source = String::from("const t = {};\n");
  for i in 0..500 {
    source.push_str(&format!(
      "export function f{i}(x) {{ return x * {i} + (t.k{i} ?? 0); }}\n"
    ));
  }
  source.push_str("console.log(f7(2));\n");
  let module = write(dir.path(), "big.mjs", &source);
  let run_cached = || {
    let o = kiln()
      .arg("run")
      .arg("--cache-dir")
      .arg(&cache)
      .arg(&module)
      .output()
      .unwrap();
    assert_eq!(stdout(&o), "14\n", "stderr: {}", stderr(&o));
  };
  let entry = || {
    let files: Vec<_> = std::fs::read_dir(cache.join("code"))
      .unwrap()
      .map(|e| e.unwrap().path())
      .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let modified = std::fs::metadata(&files[0]).unwrap().modified().unwrap();
    (
      files[0].clone(),
      modified,
      std::fs::read(&files[0]).unwrap(),
    )
  };
  run_cached();
  let (file, written, bytes) = entry();
  assert!(bytes.starts_with(b"KILNCC01") && bytes.len() > 1000);
  std::thread::sleep(std::time::Duration::from_millis(20));
  // Accepted by V8: not written again.
  run_cached();
  assert_eq!(entry().1, written);
  // A damaged entry is ignored and replaced with a good one.
  let mut damaged = bytes.clone();
  let middle = damaged.len() / 2;
  damaged[middle] ^= 0xff;
  std::fs::write(&file, &damaged).unwrap();
  run_cached();
  let (_, _, replaced) = entry();
  assert_ne!(replaced, damaged);
  assert!(replaced.starts_with(b"KILNCC01"));
  // --no-code-cache writes nothing.
  let other = dir.path().join("other");
  let o = kiln()
    .args(["run", "--no-code-cache", "--cache-dir"])
    .arg(&other)
    .arg(&module)
    .output()
    .unwrap();
  assert!(o.status.success());
  assert!(!other.exists());
}
