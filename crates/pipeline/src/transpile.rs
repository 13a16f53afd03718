//! TypeScript → JavaScript through deno_ast, with a source map.
//!
//! Used at bake time for the extension glue in `ext_js/` and at run time for
//! user modules. Type-strips only: no type checking, no bundling.

use deno_ast::MediaType;
use deno_ast::ModuleSpecifier;
use deno_ast::ParseParams;
use deno_ast::SourceMapOption;

/// Why a module could not be transpiled.
#[derive(Debug, thiserror::Error)]
pub enum TranspileError {
  /// A syntax error, rendered as one line: message and `file:line:col`.
  #[error("SyntaxError: {message} at {location}")]
  Syntax { message: String, location: String },
  #[error("cannot transpile {specifier}: {reason}")]
  Emit { specifier: String, reason: String },
}

/// Transpiled code and its source map (JSON bytes).
#[derive(Debug)]
pub struct Transpiled {
  pub code: String,
  pub source_map: Option<Vec<u8>>,
}

/// File extensions of TypeScript modules: the ones transpiled.
pub const TYPESCRIPT_EXTENSIONS: &[&str] = &["ts", "mts", "cts", "tsx"];

/// Whether a module with this specifier or path needs transpiling.
pub fn is_typescript(specifier: &str) -> bool {
  specifier
    .rsplit_once('.')
    .is_some_and(|(_, ext)| TYPESCRIPT_EXTENSIONS.contains(&ext))
}

/// Type-strips `source`, a TypeScript module named `specifier`.
pub fn transpile_typescript(
  specifier: &ModuleSpecifier,
  source: &str,
) -> Result<Transpiled, TranspileError> {
  let media_type = MediaType::from_specifier(specifier);
  let parsed = deno_ast::parse_module(ParseParams {
    specifier: specifier.clone(),
    text: source.into(),
    media_type,
    capture_tokens: false,
    scope_analysis: false,
    maybe_syntax: None,
  })
  .map_err(|d| syntax_error(&d))?;
  if let Some(d) = parsed.diagnostics().first() {
    return Err(syntax_error(d));
  }
  let emitted = parsed
    .transpile(
      &deno_ast::TranspileOptions {
        imports_not_used_as_values: deno_ast::ImportsNotUsedAsValues::Remove,
        decorators: deno_ast::DecoratorsTranspileOption::Ecma,
        ..Default::default()
      },
      &deno_ast::TranspileModuleOptions { module_kind: None },
      &deno_ast::EmitOptions {
        source_map: SourceMapOption::Separate,
        inline_sources: true,
        ..Default::default()
      },
    )
    .map_err(|e| match e {
      deno_ast::TranspileError::ParseErrors(errors) if !errors.0.is_empty() => {
        syntax_error(&errors.0[0])
      }
      other => TranspileError::Emit {
        specifier: specifier.to_string(),
        reason: other.to_string(),
      },
    })?
    .into_source();
  Ok(Transpiled {
    code: emitted.text,
    source_map: emitted.source_map.map(String::into_bytes),
  })
}

fn syntax_error(d: &deno_ast::ParseDiagnostic) -> TranspileError {
  let pos = d.display_position();
  TranspileError::Syntax {
    message: d.kind().msg().to_string(),
    location: format!(
      "{}:{}:{}",
      display_specifier(d.specifier()),
      pos.line_number,
      pos.column_number
    ),
  }
}

/// A file path for `file:` specifiers, the specifier otherwise.
fn display_specifier(specifier: &ModuleSpecifier) -> String {
  specifier
    .to_file_path()
    .map(|p| p.display().to_string())
    .unwrap_or_else(|_| specifier.to_string())
}

/// A static import of a module, as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticImport {
  pub specifier: String,
  /// Imported `with { type: "json" }`.
  pub json: bool,
}

/// What a bake needs to know about a JavaScript module before running it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModuleFacts {
  /// Static imports and re-exports (`import`, `export ... from`), in source
  /// order; type-only ones are left out.
  pub imports: Vec<StaticImport>,
  /// The module exports a binding named `main`.
  pub exports_main: bool,
}

/// Reads the static imports and exports of `code`, a JavaScript module
/// (transpiled already, so type-only imports are gone).
pub fn module_facts(
  specifier: &ModuleSpecifier,
  code: &str,
) -> Result<ModuleFacts, TranspileError> {
  use deno_ast::swc::ast;

  let parsed = deno_ast::parse_module(javascript(specifier, code)).map_err(|d| syntax_error(&d))?;
  let deno_ast::ProgramRef::Module(module) = parsed.program_ref() else {
    return Ok(ModuleFacts::default());
  };
  let is_json = |with: &Option<Box<ast::ObjectLit>>| {
    with.as_ref().is_some_and(|with| {
      with.props.iter().any(|prop| {
        let ast::PropOrSpread::Prop(prop) = prop else {
          return false;
        };
        let ast::Prop::KeyValue(kv) = &**prop else {
          return false;
        };
        let key_is_type = match &kv.key {
          ast::PropName::Ident(i) => &*i.sym == "type",
          ast::PropName::Str(s) => s.value.to_string_lossy() == "type",
          _ => false,
        };
        let value_is_json = matches!(&*kv.value, ast::Expr::Lit(ast::Lit::Str(s)) if s.value.to_string_lossy() == "json");
        key_is_type && value_is_json
      })
    })
  };
  let name_is_main = |name: &ast::ModuleExportName| match name {
    ast::ModuleExportName::Ident(i) => &*i.sym == "main",
    ast::ModuleExportName::Str(s) => s.value.to_string_lossy() == "main",
  };
  let mut facts = ModuleFacts::default();
  for item in &module.body {
    let ast::ModuleItem::ModuleDecl(decl) = item else {
      continue;
    };
    let (src, with) = match decl {
      ast::ModuleDecl::Import(import) if !import.type_only => (Some(&import.src), &import.with),
      ast::ModuleDecl::ExportAll(export) if !export.type_only => (Some(&export.src), &export.with),
      ast::ModuleDecl::ExportNamed(export) if !export.type_only => {
        for spec in &export.specifiers {
          if let ast::ExportSpecifier::Named(named) = spec {
            let exported = named.exported.as_ref().unwrap_or(&named.orig);
            facts.exports_main |= name_is_main(exported);
          }
        }
        match &export.src {
          Some(src) => (Some(src), &export.with),
          None => continue,
        }
      }
      ast::ModuleDecl::ExportDecl(export) => {
        facts.exports_main |= match &export.decl {
          ast::Decl::Fn(f) => &*f.ident.sym == "main",
          ast::Decl::Class(c) => &*c.ident.sym == "main",
          ast::Decl::Var(v) => v
            .decls
            .iter()
            .any(|d| matches!(&d.name, ast::Pat::Ident(i) if &*i.id.sym == "main")),
          _ => false,
        };
        continue;
      }
      _ => continue,
    };
    if let Some(src) = src {
      facts.imports.push(StaticImport {
        specifier: src.value.to_string_lossy().into_owned(),
        json: is_json(with),
      });
    }
  }
  Ok(facts)
}

#[cfg(test)]
mod tests {
  use super::*;

  #[test]
  fn facts_list_static_imports_in_order_and_see_main() {
    let url = ModuleSpecifier::parse("file:///app/main.js").unwrap();
    let facts = module_facts(
      &url,
      r#"import { a } from "./a.ts";
         import data from "./d.json" with { type: "json" };
         export * from "./b.js";
         export { c as main } from "./c.js";
         const lazy = () => import("./dyn.js");"#,
    )
    .unwrap();
    let specs: Vec<_> = facts
      .imports
      .iter()
      .map(|i| (i.specifier.as_str(), i.json))
      .collect();
    assert_eq!(
      specs,
      [
        ("./a.ts", false),
        ("./d.json", true),
        ("./b.js", false),
        ("./c.js", false)
      ]
    );
    assert!(facts.exports_main);
    let facts = module_facts(&url, "export async function main() {}").unwrap();
    assert!(facts.exports_main && facts.imports.is_empty());
    let facts = module_facts(&url, "export const mainly = 1; function main() {}").unwrap();
    assert!(!facts.exports_main);
  }
}

/// What parsing JavaScript `code` takes.
fn javascript(specifier: &ModuleSpecifier, code: &str) -> ParseParams {
  ParseParams {
    specifier: specifier.clone(),
    text: code.into(),
    media_type: MediaType::JavaScript,
    capture_tokens: false,
    scope_analysis: false,
    maybe_syntax: None,
  }
}

/// Whether JavaScript `code` is written as an ES module (has an `import`
/// or `export` declaration), the way Node.js tells a `.js` file of a
/// package without a `"type"` apart from CommonJS. Code that does not parse
/// counts as a module: loading it then reports the real syntax error.
pub fn has_module_syntax(specifier: &ModuleSpecifier, code: &str) -> bool {
  let parsed = deno_ast::parse_program(javascript(specifier, code));
  match parsed {
    Err(_) => true,
    Ok(parsed) => match parsed.program_ref() {
      deno_ast::ProgramRef::Module(module) => module
        .body
        .iter()
        .any(|item| matches!(item, deno_ast::swc::ast::ModuleItem::ModuleDecl(_))),
      deno_ast::ProgramRef::Script(_) => false,
    },
  }
}

#[cfg(test)]
mod module_syntax_tests {
  use super::*;

  #[test]
  fn tells_es_modules_from_commonjs() {
    let url = ModuleSpecifier::parse("file:///p/index.js").unwrap();
    assert!(has_module_syntax(&url, "export const a = 1;"));
    assert!(has_module_syntax(&url, "import x from './x.js'; x();"));
    assert!(!has_module_syntax(&url, "module.exports = { a: 1 };"));
    assert!(!has_module_syntax(
      &url,
      "const fs = require('fs'); exports.a = 1;"
    ));
    assert!(has_module_syntax(&url, "export const = ;"));
  }
}
