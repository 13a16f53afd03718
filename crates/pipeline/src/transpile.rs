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
