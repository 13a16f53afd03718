//! The permission descriptor parser deno_permissions asks its host for.
//!
//! kiln grants every permission (see the module above), so no check parses a
//! descriptor today; the parser still resolves descriptors the way Deno's CLI
//! does, against the process's current directory, so a future narrower
//! policy gets correct descriptors.

use std::borrow::Cow;
use std::path::Path;

use deno_permissions::AllowRunDescriptor;
use deno_permissions::AllowRunDescriptorParseResult;
use deno_permissions::DenyRunDescriptor;
use deno_permissions::EnvDescriptor;
use deno_permissions::EnvDescriptorParseError;
use deno_permissions::FfiDescriptor;
use deno_permissions::ImportDescriptor;
use deno_permissions::NetDescriptor;
use deno_permissions::NetDescriptorParseError;
use deno_permissions::PathDescriptor;
use deno_permissions::PathQueryDescriptor;
use deno_permissions::PathResolveError;
use deno_permissions::PermissionDescriptorParser;
use deno_permissions::ReadDescriptor;
use deno_permissions::RunDescriptorParseError;
use deno_permissions::RunQueryDescriptor;
use deno_permissions::SpecialFilePathQueryDescriptor;
use deno_permissions::SysDescriptor;
use deno_permissions::SysDescriptorParseError;
use deno_permissions::WriteDescriptor;
use sys_traits::impls::RealSys;

/// Resolves permission descriptors against the real file system.
#[derive(Debug, Clone, Copy, Default)]
pub struct KilnPermissionDescriptorParser;

fn path(text: &str) -> Result<PathDescriptor, PathResolveError> {
  PathDescriptor::new(&RealSys, Cow::Borrowed(Path::new(text)))
}

impl PermissionDescriptorParser for KilnPermissionDescriptorParser {
  fn parse_read_descriptor(&self, text: &str) -> Result<ReadDescriptor, PathResolveError> {
    path(text).map(ReadDescriptor)
  }

  fn parse_write_descriptor(&self, text: &str) -> Result<WriteDescriptor, PathResolveError> {
    path(text).map(WriteDescriptor)
  }

  fn parse_net_descriptor(&self, text: &str) -> Result<NetDescriptor, NetDescriptorParseError> {
    NetDescriptor::parse_for_list(text)
  }

  fn parse_import_descriptor(
    &self,
    text: &str,
  ) -> Result<ImportDescriptor, NetDescriptorParseError> {
    ImportDescriptor::parse_for_list(text)
  }

  fn parse_env_descriptor(&self, text: &str) -> Result<EnvDescriptor, EnvDescriptorParseError> {
    Ok(EnvDescriptor::new(Cow::Owned(text.to_string())))
  }

  fn parse_sys_descriptor(&self, text: &str) -> Result<SysDescriptor, SysDescriptorParseError> {
    SysDescriptor::parse(text.to_string())
  }

  fn parse_allow_run_descriptor(
    &self,
    text: &str,
  ) -> Result<AllowRunDescriptorParseResult, RunDescriptorParseError> {
    let cwd = std::env::current_dir().map_err(PathResolveError::CwdResolve)?;
    Ok(AllowRunDescriptor::parse(text, &cwd, &RealSys)?)
  }

  fn parse_deny_run_descriptor(&self, text: &str) -> Result<DenyRunDescriptor, PathResolveError> {
    if AllowRunDescriptor::is_path(text) {
      path(text).map(DenyRunDescriptor::Path)
    } else {
      Ok(DenyRunDescriptor::Name(text.to_string()))
    }
  }

  fn parse_ffi_descriptor(&self, text: &str) -> Result<FfiDescriptor, PathResolveError> {
    path(text).map(FfiDescriptor)
  }

  fn parse_path_query<'a>(
    &self,
    path: Cow<'a, Path>,
  ) -> Result<PathQueryDescriptor<'a>, PathResolveError> {
    PathQueryDescriptor::new(&RealSys, path)
  }

  fn parse_special_file_descriptor<'a>(
    &self,
    path: PathQueryDescriptor<'a>,
  ) -> Result<SpecialFilePathQueryDescriptor<'a>, PathResolveError> {
    SpecialFilePathQueryDescriptor::parse(&RealSys, path)
  }

  fn parse_net_query(&self, text: &str) -> Result<NetDescriptor, NetDescriptorParseError> {
    NetDescriptor::parse_for_query(text)
  }

  fn parse_run_query<'a>(
    &self,
    requested: &'a str,
  ) -> Result<RunQueryDescriptor<'a>, RunDescriptorParseError> {
    RunQueryDescriptor::parse(requested, &RealSys).map_err(Into::into)
  }
}
