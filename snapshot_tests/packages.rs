//! Packages without a bundler: bare and `npm:` specifiers from
//! `node_modules`, `deno.json` imports, the CommonJS refusal and the
//! confinement of `kiln serve`. Fixture packages are written by the tests.

use std::path::Path;

use http::StatusCode;

use crate::serve::Server;

/// Writes `files` (relative path, contents) under `dir`.
fn write_tree(dir: &Path, files: &[(&str, &str)]) {
  for (path, contents) in files {
    let path = dir.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
  }
}

/// An ES module package with conditional exports, a subpath, package
/// `imports`; a package found through its `module` field; a CommonJS-only
/// one.
const PACKAGES: &[(&str, &str)] = &[
  (
    "node_modules/esm-pkg/package.json",
    r##"{ "name": "esm-pkg", "version": "1.2.3", "type": "module",
      "exports": {
        ".": { "node": "./lib/node.js", "workerd": "./lib/workerd.js", "import": "./lib/import.js", "require": "./lib/require.cjs" },
        "./feature": { "browser": "./lib/feature-browser.js", "default": "./lib/feature.js" }
      },
      "imports": { "#util": "./lib/util.js" } }"##,
  ),
  (
    "node_modules/esm-pkg/lib/workerd.js",
    r##"import { util } from "#util"; export const which = "workerd " + util();"##,
  ),
  (
    "node_modules/esm-pkg/lib/node.js",
    r#"export const which = "node";"#,
  ),
  (
    "node_modules/esm-pkg/lib/import.js",
    r#"export const which = "import";"#,
  ),
  (
    "node_modules/esm-pkg/lib/require.cjs",
    r#"exports.which = "require";"#,
  ),
  (
    "node_modules/esm-pkg/lib/feature-browser.js",
    r#"export const feature = "browser feature";"#,
  ),
  (
    "node_modules/esm-pkg/lib/feature.js",
    r#"export const feature = "default feature";"#,
  ),
  (
    "node_modules/esm-pkg/lib/util.js",
    r#"export function util() { return "with #util"; }"#,
  ),
  (
    "node_modules/@kiln-test/scoped/package.json",
    r#"{ "name": "@kiln-test/scoped", "version": "0.1.0", "module": "./esm.js", "main": "./cjs.js" }"#,
  ),
  (
    "node_modules/@kiln-test/scoped/esm.js",
    r#"export default "module field";"#,
  ),
  (
    "node_modules/@kiln-test/scoped/cjs.js",
    r#"module.exports = "cjs";"#,
  ),
  // Written for bundlers: no "type", extensionless and directory imports.
  (
    "node_modules/bundler-style/package.json",
    r#"{ "name": "bundler-style", "module": "dist/index.js", "main": "cjs/index.js" }"#,
  ),
  (
    "node_modules/bundler-style/dist/index.js",
    r#"export { part } from "./part"; export { nested } from "./nested";"#,
  ),
  (
    "node_modules/bundler-style/dist/part.js",
    r#"export const part = "part";"#,
  ),
  (
    "node_modules/bundler-style/dist/nested/index.js",
    r#"export const nested = "nested";"#,
  ),
  (
    "node_modules/cjs-only/package.json",
    r#"{ "name": "cjs-only", "version": "1.0.0", "main": "index.js" }"#,
  ),
  (
    "node_modules/cjs-only/index.js",
    r#"module.exports = { hello: () => "hi" };"#,
  ),
];

const IMPORTS: &str = r#"
import { which } from "esm-pkg";
import { feature } from "npm:esm-pkg@1/feature";
import scoped from "@kiln-test/scoped";
import { mapped } from "mapped";
import { other } from "alias/other.js";
import { which as viaMap } from "pkg";
import { feature as viaMapSubpath } from "pkg/feature";
import { part, nested } from "bundler-style";
export const seen = [which, feature, scoped, mapped, other, viaMap, viaMapSubpath, part, nested];
"#;

const EXPECTED: &str = r#"["workerd with #util","browser feature","module field","mapped via deno.json","alias dir","workerd with #util","browser feature","part","nested"]"#;

const DENO_JSON: &[(&str, &str)] = &[
  (
    "deno.json",
    r#"{ "imports": { "mapped": "./lib/mapped.ts", "alias/": "./lib/", "pkg": "npm:esm-pkg@^1" } }"#,
  ),
  (
    "lib/mapped.ts",
    r#"export const mapped: string = "mapped via deno.json";"#,
  ),
  ("lib/other.js", r#"export const other = "alias dir";"#),
];

fn run(dir: &Path, script: &str) -> (bool, String, String) {
  let output = crate::kiln_command()
    .arg("run")
    .arg(dir.join(script))
    .current_dir(dir)
    .output()
    .unwrap();
  (
    output.status.success(),
    String::from_utf8_lossy(&output.stdout).into_owned(),
    String::from_utf8_lossy(&output.stderr).into_owned(),
  )
}

#[test]
fn kiln_run_resolves_packages_and_the_import_map() {
  let dir = tempfile::tempdir().unwrap();
  write_tree(dir.path(), PACKAGES);
  write_tree(dir.path(), DENO_JSON);
  write_tree(
    dir.path(),
    &[
      ("app/imports.ts", IMPORTS),
      (
        "app/main.ts",
        r#"import { seen } from "./imports.ts"; console.log(JSON.stringify(seen));"#,
      ),
      (
        "cjs.ts",
        r#"import { hello } from "cjs-only"; console.log(hello());"#,
      ),
      ("missing.ts", r#"import "no-such-pkg";"#),
      ("jsr.ts", r#"import "jsr:@std/path";"#),
    ],
  );
  // From a subdirectory: node_modules and deno.json are found above it.
  let (ok, stdout, stderr) = run(dir.path(), "app/main.ts");
  assert!(ok, "{stderr}");
  assert_eq!(stdout.trim(), EXPECTED);

  let (ok, _, stderr) = run(dir.path(), "cjs.ts");
  assert!(!ok);
  let cjs_file = dir.path().join("node_modules/cjs-only/index.js");
  assert!(
    stderr.contains(&format!(
      "cannot load package 'cjs-only': {} is CommonJS, and kiln runs ES modules only",
      cjs_file.display()
    )),
    "{stderr}"
  );

  let (ok, _, stderr) = run(dir.path(), "missing.ts");
  assert!(!ok);
  assert!(
    stderr.contains("cannot resolve 'no-such-pkg' from file://")
      && stderr.contains("no package 'no-such-pkg' in node_modules"),
    "{stderr}"
  );

  let (ok, _, stderr) = run(dir.path(), "jsr.ts");
  assert!(!ok);
  assert!(
    stderr.contains("jsr packages are not supported"),
    "{stderr}"
  );
}

#[tokio::test]
async fn served_functions_import_packages_from_inside_their_directory_only() {
  let dir = tempfile::tempdir().unwrap();
  let fns = dir.path().join("functions");
  let handler = r#"
    import { seen } from "./lib/imports.ts";
    export default { fetch: () => Response.json(seen) };
  "#;
  let outside = r#"
    import { which } from "outside-pkg";
    export default { fetch: () => new Response(which) };
  "#;
  write_tree(&fns, PACKAGES);
  write_tree(&fns, DENO_JSON);
  write_tree(
    &fns,
    &[
      ("pkgs.ts", handler),
      ("lib/imports.ts", IMPORTS),
      ("escape.ts", outside),
    ],
  );
  // A package beside the served directory, not in it.
  write_tree(
    dir.path(),
    &[
      (
        "node_modules/outside-pkg/package.json",
        r#"{ "name": "outside-pkg", "type": "module", "exports": "./index.js" }"#,
      ),
      (
        "node_modules/outside-pkg/index.js",
        r#"export const which = "outside";"#,
      ),
    ],
  );
  let server = Server::start_dir(dir, &fns, &["--expose-errors"], &[]);
  let (status, body) = server.get("/pkgs").await;
  assert_eq!(status, StatusCode::OK, "{body}");
  assert_eq!(body, EXPECTED);
  let (status, body) = server.get("/escape").await;
  assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
  assert!(
    body.contains("cannot resolve 'outside-pkg'")
      && body.contains("no package 'outside-pkg' in node_modules"),
    "{body}"
  );
  // The function with packages was baked into the host's snapshot.
  let stderr = server.stderr();
  assert!(
    stderr.contains("baked a snapshot of 1 of 2 functions"),
    "{stderr}"
  );
}
