//! A generated application of realistic shape for the user-code benches:
//! about 1 MB of ES modules (classes, functions, object literals) whose top
//! level builds lookup tables, written by our own generator (deterministic).

use std::fmt::Write;
use std::path::Path;

/// Modules in the app; each is about 10 KB.
pub const MODULES: usize = 100;

fn module(i: usize) -> String {
  let mut s = String::new();
  if i > 0 {
    writeln!(
      s,
      "import {{ helper as previous }} from \"./m{}.mjs\";",
      i - 1
    )
    .unwrap();
  } else {
    s.push_str("const previous = (x) => x;\n");
  }
  writeln!(s, "export class Model{i} {{").unwrap();
  s.push_str(
    "  constructor(id, name) { this.id = id; this.name = name; this.tags = []; this.score = 0; }\n",
  );
  for m in 0..8 {
    writeln!(
      s,
      "  method{m}(x) {{ this.score += x * {m} + this.id; if (this.score > {lim}) this.score %= {lim}; this.tags.push(`t{m}-${{x}}`); return this.score; }}",
      lim = 1000 + m
    )
    .unwrap();
  }
  s.push_str("  toJSON() { return { id: this.id, name: this.name, score: this.score }; }\n}\n");
  writeln!(s, "export const CONFIG_{i} = {{").unwrap();
  for k in 0..40 {
    writeln!(
      s,
      "  key{k}: {{ label: \"setting {k} of module {i}\", enabled: {}, weight: {}, path: [\"a\", \"b{k}\", \"c\"] }},",
      k % 2 == 0,
      k * i % 97
    )
    .unwrap();
  }
  s.push_str("};\n");
  for f in 0..20 {
    writeln!(
      s,
      "export function fn{i}_{f}(a, b) {{\n  let acc = previous(a) ^ {f};\n  for (let k = 0; k < (b & 7); k++) acc = (acc * 31 + k + {i}) >>> 0;\n  const text = `fn{i}_{f}:${{acc}}:${{b}}`;\n  return text.length + acc % 1000;\n}}"
    )
    .unwrap();
  }
  writeln!(s, "const TABLE = new Map();").unwrap();
  writeln!(
    s,
    "for (let k = 0; k < 300; k++) {{ const m = new Model{i}(k, `item-${{k}}`); m.method{}(k); TABLE.set(`k${{k}}`, m); }}",
    i % 8
  )
  .unwrap();
  writeln!(
    s,
    "export function lookup{i}(key) {{ return TABLE.get(key); }}"
  )
  .unwrap();
  writeln!(
    s,
    "export function helper(x) {{ return previous(x) + {i}; }}"
  )
  .unwrap();
  writeln!(s, "export const SIZE_{i} = TABLE.size;").unwrap();
  s
}

/// Writes the app into `dir`: `m0.mjs` ... and `lib.mjs`, which imports them
/// all and exports `checksum()`. Returns the total size in bytes.
pub fn write(dir: &Path) -> usize {
  std::fs::create_dir_all(dir).expect("create fixture dir");
  let mut total = 0;
  let mut lib = String::new();
  for i in 0..MODULES {
    let text = module(i);
    total += text.len();
    std::fs::write(dir.join(format!("m{i}.mjs")), text).expect("write module");
    writeln!(lib, "import * as m{i} from \"./m{i}.mjs\";").unwrap();
  }
  lib.push_str("export function checksum() {\n  let sum = 0;\n");
  for i in 0..MODULES {
    writeln!(
      lib,
      "  sum += m{i}.SIZE_{i} + m{i}.lookup{i}(\"k7\").score;"
    )
    .unwrap();
  }
  lib.push_str("  return sum;\n}\n");
  total += lib.len();
  std::fs::write(dir.join("lib.mjs"), lib).expect("write lib");
  total
}
