//! `kiln compile` through the real binary: executables that start from a
//! snapshot holding the program's modules.

use std::path::Path;
use std::path::PathBuf;
use std::process::Command;
use std::process::Output;
use std::sync::OnceLock;

fn kiln() -> Command {
  crate::kiln_command()
}

fn stdout(o: &Output) -> String {
  String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
  String::from_utf8_lossy(&o.stderr).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
  let path = dir.join(name);
  std::fs::create_dir_all(path.parent().unwrap()).unwrap();
  std::fs::write(&path, text).unwrap();
  path
}

/// Compiles `entry` (inside `dir`) to `out`.
fn compile(entry: &Path, out: &Path) -> Output {
  kiln()
    .arg("compile")
    .arg(entry)
    .arg("-o")
    .arg(out)
    .output()
    .expect("spawn kiln compile")
}

const TABLE_TS: &str = r#"export class Greeter {
  constructor(private name: string) {}
  greet(): string {
    return `hello ${this.name}`;
  }
}
// Built at compile time, baked into the snapshot.
export const TABLE: Map<string, number> = new Map();
for (let i = 0; i < 5000; i++) TABLE.set(`k${i}`, i * i);
export function fail(): never {
  throw new Error("failed inside a baked module");
}
"#;

const MAIN_TS: &str = r#"import { Greeter, TABLE, fail } from "./lib/table.ts";
import config from "./lib/config.json" with { type: "json" };
const [command, ...rest] = Deno.args;
if (command === "fail") fail();
if (command === "fresh") {
  console.log(JSON.stringify({
    random: Math.random(),
    bytes: Array.from(crypto.getRandomValues(new Uint8Array(8))),
    uuid: crypto.randomUUID(),
    now: Date.now(),
    perf: performance.now(),
  }));
} else {
  console.log(new Greeter(config.name).greet(), TABLE.get("k12"), TABLE.size, rest.join(" "));
  Deno.exit(3);
}
"#;

/// One compiled program shared by the tests below: compiled once, its
/// sources deleted, the executable kept in a directory of its own.
struct Compiled {
  _dir: tempfile::TempDir,
  exe: PathBuf,
  /// Unix ms just before the compile started.
  compiled_at: u128,
}

fn compiled() -> &'static Compiled {
  static COMPILED: OnceLock<Compiled> = OnceLock::new();
  COMPILED.get_or_init(|| {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    write(&src, "lib/table.ts", TABLE_TS);
    write(&src, "lib/config.json", r#"{ "name": "kiln" }"#);
    let entry = write(&src, "main.ts", MAIN_TS);
    let exe = dir.path().join("bin/app");
    std::fs::create_dir_all(exe.parent().unwrap()).unwrap();
    let compiled_at = now_ms();
    let o = compile(&entry, &exe);
    assert!(o.status.success(), "compile failed: {}", stderr(&o));
    // The executable must not need the sources.
    std::fs::remove_dir_all(&src).unwrap();
    Compiled {
      _dir: dir,
      exe,
      compiled_at,
    }
  })
}

fn now_ms() -> u128 {
  std::time::SystemTime::now()
    .duration_since(std::time::UNIX_EPOCH)
    .unwrap()
    .as_millis()
}

/// Runs the shared executable from an unrelated directory.
fn launch(args: &[&str]) -> Output {
  let elsewhere = tempfile::tempdir().unwrap();
  Command::new(&compiled().exe)
    .current_dir(elsewhere.path())
    .env("NO_COLOR", "1")
    .args(args)
    .output()
    .unwrap()
}

#[test]
fn compiled_program_runs_relocated_with_its_sources_gone() {
  let o = launch(&["greet", "a", "--flag"]);
  assert_eq!(o.status.code(), Some(3), "stderr: {}", stderr(&o));
  assert_eq!(stdout(&o), "hello kiln 144 5000 a --flag\n");
  assert_eq!(stderr(&o), "");
}

#[test]
fn randomness_and_time_are_fresh_at_every_launch() {
  let parse = |o: &Output| -> serde_json::Value {
    assert!(o.status.success(), "stderr: {}", stderr(o));
    serde_json::from_str(stdout(o).trim()).unwrap()
  };
  let before = now_ms();
  let a = parse(&launch(&["fresh"]));
  let b = parse(&launch(&["fresh"]));
  let after = now_ms();
  assert_ne!(a["random"], b["random"]);
  assert_ne!(a["bytes"], b["bytes"]);
  assert_ne!(a["uuid"], b["uuid"]);
  for launch in [&a, &b] {
    let now = launch["now"].as_f64().unwrap() as u128;
    assert!(
      now >= before && now <= after && now > compiled().compiled_at,
      "Date.now() {now} is not the launch's ({before}..{after})"
    );
    // The time origin is the launch's too, not the compile's.
    let perf = launch["perf"].as_f64().unwrap();
    assert!((0.0..5_000.0).contains(&perf), "performance.now() {perf}");
  }
}

#[test]
fn a_throw_inside_a_baked_typescript_module_names_its_ts_line() {
  let o = launch(&["fail"]);
  assert_eq!(o.status.code(), Some(1));
  let err = stderr(&o);
  assert!(err.contains("failed inside a baked module"), "{err}");
  // Line 11 of lib/table.ts, named relative to the app's root.
  assert!(err.contains("file:///app/lib/table.ts:11:9"), "{err}");
  assert!(err.contains("file:///app/main.ts:4"), "{err}");
}

#[test]
fn an_exported_main_is_baked_and_its_return_value_is_the_exit_code() {
  let dir = tempfile::tempdir().unwrap();
  write(
    dir.path(),
    "dep.ts",
    "export const evaluated: number[] = [];\n",
  );
  let entry = write(
    dir.path(),
    "cli.ts",
    r#"import { evaluated } from "./dep.ts";
evaluated.push(1);
export async function main(): Promise<number> {
  await new Promise((r) => setTimeout(r, 5));
  console.log("main", Deno.args.length, evaluated.length);
  return 42;
}
"#,
  );
  let exe = dir.path().join("cli");
  let o = compile(&entry, &exe);
  assert!(o.status.success(), "{}", stderr(&o));
  let o = Command::new(&exe).args(["x", "y"]).output().unwrap();
  // The body ran once, at compile time; main() runs at launch.
  assert_eq!(stdout(&o), "main 2 1\n", "stderr: {}", stderr(&o));
  assert_eq!(o.status.code(), Some(42));
}

/// Asserts `kiln compile` failed with one line naming `needle`, and wrote
/// nothing.
fn assert_compile_refused(entry: &Path, needle: &str) {
  let exe = entry.with_extension("exe");
  let o = compile(entry, &exe);
  assert_eq!(o.status.code(), Some(1), "stdout: {}", stdout(&o));
  let err = stderr(&o);
  assert_eq!(err.trim_end().lines().count(), 1, "{err}");
  assert!(err.starts_with("error: cannot compile "), "{err}");
  assert!(err.contains(needle), "expected {needle:?} in {err}");
  assert!(!err.contains("panicked"), "{err}");
  assert!(!exe.exists());
}

#[test]
fn state_that_cannot_be_baked_is_one_clear_error() {
  let dir = tempfile::tempdir().unwrap();
  write(
    dir.path(),
    "ticker.ts",
    "export const id = setInterval(() => {}, 1000);\n",
  );
  write(dir.path(), "timer.ts", "setTimeout(() => {}, 1000);\n");
  write(
    dir.path(),
    "throws.ts",
    "throw new TypeError(\"bad config\");\n",
  );
  let interval = write(dir.path(), "a.ts", "import \"./ticker.ts\";\n");
  let timeout = write(dir.path(), "b.ts", "import \"./timer.ts\";\n");
  let throws = write(dir.path(), "c.ts", "import \"./throws.ts\";\n");
  let outside = write(dir.path(), "d.ts", "import \"../elsewhere.ts\";\n");
  let missing = write(dir.path(), "e.ts", "import \"./nope.ts\";\n");
  assert_compile_refused(&interval, "a pending interval (setInterval)");
  assert_compile_refused(&timeout, "a pending timer (setTimeout)");
  assert_compile_refused(&throws, "TypeError: bad config");
  let syntax = write(dir.path(), "f.ts", "const x = ;\n");
  assert_compile_refused(
    &syntax,
    &format!(
      "SyntaxError: Expression expected at {}:1:11",
      syntax.display()
    ),
  );
  assert_compile_refused(&outside, "outside the app root");
  // Compile-time errors name the files on this machine.
  let importer = deno_core::ModuleSpecifier::from_file_path(dir.path().join("e.ts")).unwrap();
  assert_compile_refused(&missing, &format!("nope.ts (imported from {importer})"));
}

/// The container of a compiled executable: (start, length) in its bytes.
fn container_range(bytes: &[u8]) -> (usize, usize) {
  let end = bytes.len() - 16;
  assert_eq!(&bytes[end + 8..], b"KILNEXE1");
  let len = u64::from_le_bytes(bytes[end..end + 8].try_into().unwrap()) as usize;
  (end - len, len)
}

#[test]
fn tampered_and_foreign_app_containers_are_refused_clearly() {
  let dir = tempfile::tempdir().unwrap();
  let bytes = std::fs::read(&compiled().exe).unwrap();
  let (start, len) = container_range(&bytes);

  // A flipped byte in the compressed payload: zstd's checksum catches it.
  let mut tampered = bytes.clone();
  tampered[start + len - 100] ^= 0x55;
  let exe = dir.path().join("tampered");
  std::fs::write(&exe, &tampered).unwrap();
  std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
  let o = Command::new(&exe).output().unwrap();
  assert_eq!(o.status.code(), Some(1));
  let err = stderr(&o);
  assert!(
    err.starts_with("error: this executable's app cannot run: snapshot payload"),
    "{err}"
  );

  // A container baked by another kiln (another deno_core here).
  let container =
    kiln_pipeline::container::SnapshotContainer::parse(&bytes[start..start + len]).unwrap();
  let mut manifest = container.manifest.clone();
  manifest.deno_core = "0.999.0".into();
  let raw = container.decompress().unwrap();
  let foreign = kiln_pipeline::container::SnapshotContainer::encode(&manifest, &raw, 1).unwrap();
  let mut other = bytes[..start].to_vec();
  other.extend_from_slice(&foreign);
  other.extend_from_slice(&(foreign.len() as u64).to_le_bytes());
  other.extend_from_slice(b"KILNEXE1");
  let exe = dir.path().join("foreign");
  std::fs::write(&exe, &other).unwrap();
  std::fs::set_permissions(&exe, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
  let o = Command::new(&exe).output().unwrap();
  assert_eq!(o.status.code(), Some(1));
  let err = stderr(&o);
  assert!(err.contains("snapshot fingerprint mismatch"), "{err}");
  assert!(err.contains("deno_core 0.999.0 vs 0.413.0"), "{err}");
  assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
