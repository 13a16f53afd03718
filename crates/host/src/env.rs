//! A function's variables (`Deno.env` and the `env` argument of
//! `fetch(request, env, ctx)`): host variables named by `--inherit-env`,
//! then `--env-file`, then `<dir>/<name>.env` beside the function, each
//! overriding the one before. The host's own environment is never visible
//! otherwise. Values never appear in logs or errors: a bad line is reported
//! by file and line number only.

use std::collections::BTreeMap;
use std::path::Path;
use std::path::PathBuf;

/// Variables by name.
pub type Vars = BTreeMap<String, String>;

/// Why an env file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum EnvFileError {
  #[error("cannot read env file {}: {source}", path.display())]
  Read {
    path: PathBuf,
    source: std::io::Error,
  },
  #[error("{}:{line}: {reason}", path.display())]
  Syntax {
    path: PathBuf,
    line: usize,
    reason: &'static str,
  },
}

/// The variables of `names` that the host process has (others are left out).
pub fn inherited(names: &[String]) -> Vars {
  names
    .iter()
    .filter_map(|name| Some((name.clone(), std::env::var(name).ok()?)))
    .collect()
}

/// Reads a dotenv file into `vars` (later files override earlier ones).
pub fn read_into(vars: &mut Vars, path: &Path) -> Result<(), EnvFileError> {
  let text = std::fs::read_to_string(path).map_err(|source| EnvFileError::Read {
    path: path.to_path_buf(),
    source,
  })?;
  for (i, line) in text.lines().enumerate() {
    let syntax = |reason| EnvFileError::Syntax {
      path: path.to_path_buf(),
      line: i + 1,
      reason,
    };
    if let Some((key, value)) = parse_line(line).map_err(syntax)? {
      vars.insert(key, value);
    }
  }
  Ok(())
}

/// One dotenv line: blank or `# comment` (None), or `[export] KEY=VALUE`
/// where VALUE is bare (an unquoted ` #` starts a comment), `'literal'` or
/// `"with \n \t \" \\ escapes"`.
fn parse_line(line: &str) -> Result<Option<(String, String)>, &'static str> {
  let line = line.trim();
  if line.is_empty() || line.starts_with('#') {
    return Ok(None);
  }
  let line = line.strip_prefix("export ").unwrap_or(line);
  let (key, rest) = line.split_once('=').ok_or("expected KEY=VALUE")?;
  let key = key.trim();
  let mut chars = key.chars();
  let valid_start = chars
    .next()
    .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
  if !valid_start || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
    return Err("invalid variable name");
  }
  let rest = rest.trim_start();
  let (value, after) = match rest.chars().next() {
    Some('\'') => {
      let end = rest[1..].find('\'').ok_or("unterminated single quote")?;
      (rest[1..1 + end].to_string(), &rest[end + 2..])
    }
    Some('"') => {
      let mut value = String::new();
      let mut escaped = false;
      let mut end = None;
      for (i, c) in rest[1..].char_indices() {
        match (escaped, c) {
          (true, 'n') => value.push('\n'),
          (true, 'r') => value.push('\r'),
          (true, 't') => value.push('\t'),
          (true, other) => value.push(other),
          (false, '\\') => {
            escaped = true;
            continue;
          }
          (false, '"') => {
            end = Some(i);
            break;
          }
          (false, other) => value.push(other),
        }
        escaped = false;
      }
      let end = end.ok_or("unterminated double quote")?;
      (value, &rest[end + 2..])
    }
    _ => {
      let value = rest.split(" #").next().unwrap_or("").trim_end();
      (value.to_string(), "")
    }
  };
  let after = after.trim();
  if !after.is_empty() && !after.starts_with('#') {
    return Err("unexpected text after the quoted value");
  }
  Ok(Some((key.to_string(), value)))
}

#[cfg(test)]
mod tests {
  use super::*;

  fn kv(line: &str) -> Option<(String, String)> {
    parse_line(line).unwrap()
  }

  #[test]
  fn dotenv_lines() {
    assert_eq!(kv(""), None);
    assert_eq!(kv("  # comment"), None);
    assert_eq!(kv("A=1"), Some(("A".into(), "1".into())));
    assert_eq!(
      kv("export B = two words # note"),
      Some(("B".into(), "two words".into()))
    );
    assert_eq!(kv("C='a # b \\n'"), Some(("C".into(), "a # b \\n".into())));
    assert_eq!(kv(r#"D="x\ny\"z""#), Some(("D".into(), "x\ny\"z".into())));
    assert_eq!(kv("E="), Some(("E".into(), "".into())));
    assert_eq!(kv("F=a=b"), Some(("F".into(), "a=b".into())));
    for bad in [
      "novalue",
      "1X=1",
      "A B=1",
      "G='open",
      "H=\"open",
      "I=\"x\" y",
    ] {
      assert!(parse_line(bad).is_err(), "{bad}");
    }
  }

  #[test]
  fn errors_name_the_line_not_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f.env");
    std::fs::write(&path, "OK=1\nSECRET=\"hunter2\n").unwrap();
    let err = read_into(&mut Vars::new(), &path).unwrap_err().to_string();
    assert!(err.ends_with("f.env:2: unterminated double quote"), "{err}");
    assert!(!err.contains("hunter2"));
  }
}
