//! `Runtime`: a JS runtime thawed from the baked snapshot.
//!
//! Creating one verifies the embedded snapshot (once per process), creates a
//! `JsRuntime` with the same extension list the bake used, and runs the
//! bootstrap step that applies run-time configuration. It must never evaluate
//! extension code at start-up: that happened at bake time.

mod allocator;
mod code_cache;
pub(crate) mod loader;
mod packages;

use std::path::Path;
use std::path::PathBuf;
use std::rc::Rc;

use deno_core::Extension;
use deno_core::JsRuntime;
use deno_core::PollEventLoopOptions;
use deno_core::error::CoreError;
use deno_core::error::CoreErrorKind;
use deno_core::error::JsError;
use deno_core::v8;
use kiln_pipeline::info::read_only_checksum;

pub use code_cache::CodeCache;
pub use loader::DEFAULT_MAX_MODULE_BYTES;
pub use loader::FsModuleLoader;
pub use loader::JAVASCRIPT_EXTENSIONS;
pub use loader::ModuleAccess;
pub use loader::Relocation;

pub use deno_core::ModuleSpecifier;

pub use crate::extensions::runtime::Env;

use crate::extensions;
use crate::extensions::ExtensionOptions;
use crate::extensions::LocalCronHandler;
use crate::extensions::cron::CronHandler;
use crate::extensions::runtime::ExitRequest;
use crate::extensions::runtime::OutputClosed;
use crate::extensions::runtime::TerminationHandle;
use crate::snapshot::container::ContainerError;
use crate::snapshot::container::Manifest;
use crate::snapshot::load;

/// Why a runtime could not start or a program failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
  /// The snapshot is unusable (truncated, corrupt, or baked for a different
  /// extension set).
  #[error(transparent)]
  Snapshot(#[from] ContainerError),
  /// No snapshot to start from: this crate was built without its
  /// `embedded-snapshot` feature and none was given
  /// ([`RuntimeBuilder::snapshot`]).
  #[error("no snapshot: kiln was built without `embedded-snapshot`; give the builder one")]
  NoSnapshot,
  /// deno_core refused to create the runtime.
  #[error("cannot create the JS runtime: {0}")]
  Init(String),
  /// The main module does not exist.
  #[error("module not found: {}", .0.display())]
  ModuleNotFound(PathBuf),
  /// A module failed to load: syntax error, missing import, unsupported
  /// specifier. One line.
  #[error("{0}")]
  Load(String),
  /// An uncaught exception, as deno_core reports it: message, class and
  /// source-mapped frames. Displays as its stack.
  #[error("{0}")]
  Uncaught(Box<JsError>),
  /// A function the glue registered for the host (`hostHooks[hook]`)
  /// threw. Displays as the exception's one-line message.
  #[error("{}", exception_message(.error))]
  HostHook { hook: String, error: Box<JsError> },
  /// The program wrote to a closed stdout (a broken pipe) and was stopped
  /// (see [`RuntimeOptions::stop_on_closed_stdout`]).
  #[error("stdout was closed (broken pipe)")]
  OutputClosed,
  /// An app method on a runtime not thawed from an app image, or an app
  /// whose entry lacks what it promised.
  #[error("this runtime holds no app (see RuntimeBuilder::app)")]
  NoApp,
}

/// Options of a runtime; all of them are run-time configuration, never baked.
#[derive(Debug, Clone, Default)]
pub struct RuntimeOptions {
  /// `Deno.args`.
  pub args: Vec<String>,
  /// Console output to a closed stdout stops the program
  /// ([`Error::OutputClosed`]), as a command-line tool in a pipeline
  /// should (`kiln run` sets it); otherwise such output is dropped.
  pub stop_on_closed_stdout: bool,
  /// What `Deno.env` holds (default: nothing, read-only).
  pub env: Env,
  /// Keep V8 code caches of loaded modules here (`<dir>/code/`), so a
  /// module's next load skips compiling it (default: none).
  pub code_cache_dir: Option<PathBuf>,
}

/// A JS runtime thawed from kiln's snapshot.
///
/// ```no_run
/// # async fn demo() -> Result<(), kiln::Error> {
/// let mut runtime = kiln::Runtime::new(kiln::RuntimeOptions::default())?;
/// runtime.execute_script("console.log(1 + 1)")?;
/// let code = runtime.run_main_module(std::path::Path::new("main.ts")).await?;
/// # let _ = code; Ok(()) }
/// ```
///
/// Must be created inside a tokio runtime context; it is not `Send`.
pub struct Runtime {
  js: JsRuntime,
  /// What the glue's `bootstrap()` returned: functions the host calls into.
  host_hooks: v8::Global<v8::Value>,
  /// The app this runtime was thawed with, if any.
  #[cfg(feature = "embedded-snapshot")]
  app: Option<crate::app::AppImage>,
}

/// The URL a relocated app's root directory is named by: a module
/// `<root>/lib/util.ts` is baked as `file:///app/lib/util.ts`, wherever the
/// app was compiled.
pub const APP_BASE: &str = "file:///app/";

/// User modules for [`kiln_pipeline::bake::Baker::modules`] (or
/// [`kiln_pipeline::bake::snapshot_with_modules`]), evaluated at bake as
/// kiln expects: they see the public `Deno` namespace (no arguments, no
/// environment) and a console, their top-level `Deno.cron` jobs are
/// recorded and start when [`Runtime::baked_module`] takes the module, and
/// reading `Deno.env` or using Web Crypto while baking fails the bake.
/// Name modules with a [`Relocation`] in `loader` so the snapshot does not
/// carry the build machine's paths.
pub fn user_modules(
  loader: std::rc::Rc<dyn deno_core::ModuleLoader>,
  modules: Vec<ModuleSpecifier>,
) -> kiln_pipeline::bake::UserModules {
  let entries = modules.clone();
  user_modules_for(loader, modules, &entries, false)
}

/// [`user_modules`] where the cron jobs of `modules[i]` (and what it
/// imports) belong to `entries[i]`.
///
/// `serving`: the entries are functions for `kiln serve`; the bake also
/// compiles the request path into the snapshot (see `compileRequestPath` in
/// `ext_js/serve.ts`).
pub(crate) fn user_modules_for(
  loader: std::rc::Rc<dyn deno_core::ModuleLoader>,
  modules: Vec<ModuleSpecifier>,
  entries: &[ModuleSpecifier],
  serving: bool,
) -> kiln_pipeline::bake::UserModules {
  let tags: Vec<String> = entries
    .iter()
    .map(|m| serde_json::to_string(m.as_str()).unwrap_or_default())
    .collect();
  kiln_pipeline::bake::UserModules {
    loader,
    prelude: Some(format!("globalThis.__kilnBakeBegin({serving});")),
    modules,
    before_each: Some(Box::new(move |i| {
      format!("globalThis.__kilnBakeEntryBegin({});", tags[i])
    })),
    on_module: None,
    after_each: Some("globalThis.__kilnBakeEntryEnd();".into()),
    postlude: Some("globalThis.__kilnBakeEnd();".into()),
    timeout: None,
    max_heap_bytes: None,
  }
}

/// kiln's cache directory: `$XDG_CACHE_HOME/kiln`, else `$HOME/.cache/kiln`,
/// else one in the temporary directory.
pub fn default_cache_dir() -> PathBuf {
  let non_empty = |name| std::env::var_os(name).filter(|v| !v.is_empty());
  if let Some(dir) = non_empty("XDG_CACHE_HOME") {
    return PathBuf::from(dir).join("kiln");
  }
  if let Some(home) = non_empty("HOME") {
    return PathBuf::from(home).join(".cache").join("kiln");
  }
  std::env::temp_dir().join("kiln-cache")
}

/// The manifest of the extension list this binary runs with.
pub fn expected_manifest() -> Manifest {
  Manifest::new(load::TARGET, &extensions::all(ExtensionOptions::default()))
}

/// Residual lazy sources (JS, ESM) of a bake: the `RESIDUAL_LAZY_JS` and
/// `RESIDUAL_LAZY_ESM` tables of its generated `kiln_residual.rs`.
pub type ResidualSources = (
  &'static [(&'static str, &'static str)],
  &'static [(&'static str, &'static str)],
);

/// Builds a [`Runtime`] from an embedder's snapshot container (baked with
/// [`crate::snapshot::bake::Baker`] from `extensions::all()` plus the
/// embedder's extensions, in the same order as given here).
///
/// An embedder passes the container and residual table its own `build.rs`
/// wrote into `OUT_DIR` (see `examples/embed/`); with kiln's embedded ones:
///
/// ```no_run
/// # fn demo() -> Result<(), kiln::Error> {
/// use kiln::snapshot::load;
/// let runtime = kiln::Runtime::builder()
///   .snapshot(load::EMBEDDED_SNAPSHOT)
///   .residual_sources(load::RESIDUAL_LAZY_JS, load::RESIDUAL_LAZY_ESM)
///   // .extension(my_ext::init(..)) for extensions baked after kiln's
///   .build()?;
/// # let _ = runtime; Ok(()) }
/// ```
pub struct RuntimeBuilder<C: CronHandler = LocalCronHandler> {
  container: Option<&'static [u8]>,
  residual: Option<ResidualSources>,
  extensions: Vec<Extension>,
  options: RuntimeOptions,
  cron: C,
  max_heap_bytes: Option<usize>,
  modules: ModuleAccess,
  #[cfg(feature = "embedded-snapshot")]
  app: Option<crate::app::AppImage>,
}

impl Default for RuntimeBuilder {
  fn default() -> Self {
    RuntimeBuilder {
      container: None,
      residual: None,
      extensions: Vec::new(),
      options: RuntimeOptions::default(),
      cron: LocalCronHandler::default(),
      max_heap_bytes: None,
      modules: ModuleAccess::default(),
      #[cfg(feature = "embedded-snapshot")]
      app: None,
    }
  }
}

impl<C: CronHandler + 'static> RuntimeBuilder<C> {
  /// The `Deno.cron` backend (default: [`LocalCronHandler`]). Run-time
  /// configuration: any handler works with the same snapshot.
  pub fn cron_handler<D: CronHandler + 'static>(self, handler: D) -> RuntimeBuilder<D> {
    RuntimeBuilder {
      container: self.container,
      residual: self.residual,
      extensions: self.extensions,
      options: self.options,
      cron: handler,
      max_heap_bytes: self.max_heap_bytes,
      modules: self.modules,
      #[cfg(feature = "embedded-snapshot")]
      app: self.app,
    }
  }

  /// Starts from an app image (kiln's extensions plus baked user code)
  /// instead of kiln's own snapshot; [`Runtime::run_app`] and
  /// [`Runtime::load_app_module`] then run it.
  #[cfg(feature = "embedded-snapshot")]
  pub fn app(mut self, image: crate::app::AppImage) -> Self {
    self.app = Some(image);
    self
  }

  /// Which files user code may import (default: any regular file up to
  /// [`DEFAULT_MAX_MODULE_BYTES`]). A host running code it did not write
  /// confines it to a directory with [`ModuleAccess::root`].
  pub fn module_access(mut self, access: ModuleAccess) -> Self {
    self.modules = access;
    self
  }

  /// Caps the V8 heap of this runtime, and separately the bytes of live
  /// ArrayBuffer contents (which live outside the heap) at the same amount.
  /// Near the heap cap V8 calls the runtime's near-heap-limit callbacks (see
  /// [`Runtime::js_runtime`]); past it, the process aborts, so hosts
  /// terminate execution from such a callback. An ArrayBuffer allocation
  /// past its cap fails; V8 then collects garbage as a last resort, which
  /// reaches the near-heap-limit callbacks too.
  pub fn max_heap_bytes(mut self, bytes: usize) -> Self {
    self.max_heap_bytes = Some(bytes);
    self
  }

  /// The snapshot container (default: the one embedded in kiln).
  pub fn snapshot(mut self, container: &'static [u8]) -> Self {
    self.container = Some(container);
    self
  }

  /// The residual lazy sources of the same bake as the snapshot.
  pub fn residual_sources(
    mut self,
    js: &'static [(&'static str, &'static str)],
    esm: &'static [(&'static str, &'static str)],
  ) -> Self {
    self.residual = Some((js, esm));
    self
  }

  /// An extension baked after kiln's (and any added before it).
  pub fn extension(mut self, extension: Extension) -> Self {
    self.extensions.push(extension);
    self
  }

  /// Run-time options (`Deno.args`).
  pub fn options(mut self, options: RuntimeOptions) -> Self {
    self.options = options;
    self
  }

  /// Checks the container against kiln's extensions plus the ones given here
  /// (a mismatch is [`ContainerError::FingerprintMismatch`]), thaws it (once
  /// per process and container) and creates the runtime.
  pub fn build(self) -> Result<Runtime, Error> {
    let create_params = self.max_heap_bytes.map(|max| {
      v8::CreateParams::default()
        .heap_limits(0, max)
        .array_buffer_allocator(allocator::capped(max))
    });
    #[cfg(feature = "embedded-snapshot")]
    if let Some(app) = self.app {
      JsRuntime::init_platform(None);
      let loader = app
        .loader(self.modules)
        .map_err(|e| Error::Load(e.to_string()))?;
      let mut runtime = Runtime::create(
        app.snapshot(),
        EMBEDDED_RESIDUAL,
        self.options,
        self.cron,
        self.extensions,
        create_params,
        loader,
      )?;
      runtime.app = Some(app);
      return Ok(runtime);
    }
    let (raw, residual) = match self.container {
      #[cfg(feature = "embedded-snapshot")]
      None if self.extensions.is_empty() => {
        // Decompression (first runtime of the process only) runs on a thread
        // while V8's platform starts here.
        prefetch_snapshot();
        JsRuntime::init_platform(None);
        (load::embedded(expected_manifest)?, EMBEDDED_RESIDUAL)
      }
      container => {
        // kiln's own snapshot holds only kiln's extensions, so extra ones
        // without a container of their own are a fingerprint mismatch.
        let container = container.map_or_else(embedded_container, Ok)?;
        let raw = load::thaw_cached(container, &manifest_with(&self.extensions))?;
        (raw, self.residual.unwrap_or((&[], &[])))
      }
    };
    Runtime::create(
      raw,
      residual,
      self.options,
      self.cron,
      self.extensions,
      create_params,
      FsModuleLoader::new(self.modules),
    )
  }
}

/// kiln's own container, when this crate embeds one.
fn embedded_container() -> Result<&'static [u8], Error> {
  #[cfg(feature = "embedded-snapshot")]
  return Ok(load::EMBEDDED_SNAPSHOT);
  #[cfg(not(feature = "embedded-snapshot"))]
  Err(Error::NoSnapshot)
}

/// The residual sources that belong to kiln's embedded snapshot.
#[cfg(feature = "embedded-snapshot")]
const EMBEDDED_RESIDUAL: ResidualSources = (load::RESIDUAL_LAZY_JS, load::RESIDUAL_LAZY_ESM);

/// The manifest of kiln's extensions followed by `extra`.
fn manifest_with(extra: &[Extension]) -> Manifest {
  let mut manifest = expected_manifest();
  manifest
    .extensions
    .extend(Manifest::new(load::TARGET, extra).extensions);
  manifest
}

/// Starts thawing the embedded snapshot in the background; call it as early
/// as possible in `main` to hide the decompression behind process start-up.
/// [`Runtime::new`] calls it too.
#[cfg(feature = "embedded-snapshot")]
pub fn prefetch_snapshot() {
  load::prefetch_embedded(expected_manifest);
}

/// Checks (and thaws, once per process) the embedded snapshot, so a host can
/// refuse to start on a broken one instead of failing every request.
#[cfg(feature = "embedded-snapshot")]
pub fn check_embedded_snapshot() -> Result<(), ContainerError> {
  load::embedded(expected_manifest).map(|_| ())
}

impl Runtime {
  /// Thaws a runtime from the embedded snapshot and bootstraps it.
  #[cfg(feature = "embedded-snapshot")]
  pub fn new(options: RuntimeOptions) -> Result<Self, Error> {
    Self::builder().options(options).build()
  }

  /// Creates a runtime from raw (already checked and decompressed) snapshot
  /// bytes baked from `extensions::all()`, skipping the check. Prefer
  /// [`Runtime::new`] or [`Runtime::builder`]; this is for embedders (and
  /// benchmarks) that manage snapshot bytes themselves.
  ///
  /// # Safety
  ///
  /// `snapshot` must be the output of [`load::thaw`] (or
  /// [`load::embedded`]) for exactly kiln's extension list: V8 does not
  /// check ops or external references, so other bytes are undefined
  /// behaviour (typically a crash inside V8).
  #[cfg(feature = "embedded-snapshot")]
  pub unsafe fn from_snapshot(
    snapshot: &'static [u8],
    options: RuntimeOptions,
  ) -> Result<Self, Error> {
    Self::create(
      snapshot,
      EMBEDDED_RESIDUAL,
      options,
      LocalCronHandler::default(),
      Vec::new(),
      None,
      FsModuleLoader::new(ModuleAccess::default()),
    )
  }

  /// A builder for runtimes thawed from an embedder's own snapshot, with
  /// extensions baked next to kiln's.
  pub fn builder() -> RuntimeBuilder {
    RuntimeBuilder::default()
  }

  fn create<C: CronHandler + 'static>(
    snapshot: &'static [u8],
    residual: ResidualSources,
    options: RuntimeOptions,
    cron: C,
    extra_extensions: Vec<Extension>,
    create_params: Option<v8::CreateParams>,
    loader: FsModuleLoader,
  ) -> Result<Self, Error> {
    let loader = loader.with_code_cache(options.code_cache_dir.as_deref().map(CodeCache::new));
    let ext_options = ExtensionOptions {
      runtime: extensions::RuntimeConfig {
        args: options.args,
        stop_on_closed_stdout: options.stop_on_closed_stdout,
        env: options.env,
      },
      cron,
    };
    let mut all = extensions::all(ext_options);
    all.extend(extra_extensions);
    check_read_only_heap(snapshot)?;
    let mut js = JsRuntime::try_new(deno_core::RuntimeOptions {
      startup_snapshot: Some(snapshot),
      extensions: all,
      module_loader: Some(Rc::new(loader)),
      residual_lazy_js_sources: residual.0,
      residual_lazy_esm_sources: residual.1,
      create_params,
      ..Default::default()
    })
    .map_err(|e| Error::Init(e.to_string()))?;
    let handle = js.v8_isolate().thread_safe_handle();
    js.op_state().borrow_mut().put(TerminationHandle(handle));
    let host_hooks = call_bootstrap(&mut js)?;
    Ok(Runtime {
      js,
      host_hooks,
      #[cfg(feature = "embedded-snapshot")]
      app: None,
    })
  }

  /// A function the glue registered for the host under `hostHooks[name]`.
  fn host_hook(&mut self, name: &str) -> Option<v8::Global<v8::Function>> {
    deno_core::scope!(scope, &mut self.js);
    let hooks = v8::Local::new(scope, &self.host_hooks);
    let hooks = v8::Local::<v8::Object>::try_from(hooks).ok()?;
    let key = v8::String::new(scope, name)?;
    let value = hooks.get(scope, key.into())?;
    let function = v8::Local::<v8::Function>::try_from(value).ok()?;
    Some(v8::Global::new(scope, function))
  }

  /// Calls `hostHooks[name](arg)` — a function kiln's glue registered for
  /// the host, such as `serve` (used by `kiln-host`) — and waits for it to
  /// return (running the event loop meanwhile if it returns a promise). A JS
  /// exception becomes [`Error::HostHook`].
  pub async fn call_host_hook(
    &mut self,
    name: &str,
    arg: v8::Global<v8::Object>,
  ) -> Result<(), Error> {
    let arg = {
      deno_core::scope!(scope, &mut self.js);
      let local = v8::Local::new(scope, &arg);
      v8::Global::new(scope, v8::Local::<v8::Value>::from(local))
    };
    self.call_host_hook_with(name, arg).await
  }

  async fn call_host_hook_with(
    &mut self,
    name: &str,
    arg: v8::Global<v8::Value>,
  ) -> Result<(), Error> {
    let hook = self
      .host_hook(name)
      .ok_or_else(|| Error::Init(format!("the snapshot has no host hook '{name}'")))?;
    let call = self.js.call_with_args(&hook, &[arg]);
    match self
      .js
      .with_event_loop_promise(call, PollEventLoopOptions::default())
      .await
    {
      Ok(_) => Ok(()),
      Err(e) => Err(match *e.0 {
        CoreErrorKind::Js(error) => Error::HostHook {
          hook: name.to_string(),
          error,
        },
        other => Error::Load(other.to_string()),
      }),
    }
  }

  /// Loads and evaluates `path` as the main module, running the event loop
  /// only until its evaluation (including top-level await) settles; work the
  /// module scheduled (timers, cron jobs) stays pending. Returns the module
  /// namespace.
  pub async fn load_main_module(&mut self, path: &Path) -> Result<v8::Global<v8::Object>, Error> {
    let specifier = main_specifier(path)?;
    let (id, evaluation) = self.load_and_evaluate(&specifier, true).await?;
    self.namespace_once_evaluated(id, evaluation).await
  }

  /// Loads `specifier` as the main module (or a side module) and starts its
  /// evaluation: the one place every way of running a module begins. A
  /// module already in the module map (baked) is found, not loaded, and its
  /// evaluation is already done.
  async fn load_and_evaluate(
    &mut self,
    specifier: &ModuleSpecifier,
    main: bool,
  ) -> Result<
    (
      deno_core::ModuleId,
      impl std::future::Future<Output = Result<(), CoreError>> + Unpin + use<>,
    ),
    Error,
  > {
    let id = if main {
      self.js.load_main_es_module(specifier).await
    } else {
      self.js.load_side_es_module(specifier).await
    }
    .map_err(load_error)?;
    Ok((id, self.js.mod_evaluate(id)))
  }

  /// Runs the event loop until `evaluation` (top-level await included)
  /// settles, leaving other work pending, and returns the namespace.
  async fn namespace_once_evaluated(
    &mut self,
    id: deno_core::ModuleId,
    evaluation: impl std::future::Future<Output = Result<(), CoreError>> + Unpin,
  ) -> Result<v8::Global<v8::Object>, Error> {
    self
      .js
      .with_event_loop_future(evaluation, PollEventLoopOptions::default())
      .await
      .map_err(classify)?;
    self.js.get_module_namespace(id).map_err(classify)
  }

  /// The underlying deno_core runtime, for embedders that need more.
  pub fn js_runtime(&mut self) -> &mut JsRuntime {
    &mut self.js
  }

  /// Runs a classic script and returns its completion value as a string
  /// (`String(value)`).
  pub fn execute_script(&mut self, code: &str) -> Result<String, Error> {
    let value = self
      .js
      .execute_script("kiln:script", code.to_string())
      .map_err(Error::Uncaught)?;
    deno_core::scope!(scope, &mut self.js);
    let local = deno_core::v8::Local::new(scope, value);
    Ok(local.to_rust_string_lossy(scope))
  }

  /// Runs the event loop until no work is left.
  pub async fn run_event_loop(&mut self) -> Result<(), Error> {
    self
      .js
      .run_event_loop(PollEventLoopOptions::default())
      .await
      .map_err(classify)
  }

  /// Loads `path` as the main module, evaluates it and runs the event loop to
  /// completion. Returns the exit code: 0, or what `Deno.exit(code)` asked for.
  pub async fn run_main_module(&mut self, path: &Path) -> Result<i32, Error> {
    let result = self.run_module(path).await;
    self.exit_code(result.map(|()| 0))
  }

  /// Runs the app this runtime was thawed with (see
  /// [`RuntimeBuilder::app`]) as a program: the entry's body, or its
  /// `main()` when it exports one, then the event loop to completion.
  /// Returns the exit code: what `Deno.exit` asked for, else a number
  /// `main()` returned, else 0.
  #[cfg(feature = "embedded-snapshot")]
  pub async fn run_app(&mut self) -> Result<i32, Error> {
    let app = self.app.clone().ok_or(Error::NoApp)?;
    let entry = app.entry().map_err(|e| Error::Load(e.to_string()))?;
    self.start_baked_jobs(&entry).await?;
    let result = if app.has_main() {
      self.run_app_main(&entry).await
    } else {
      self.run_specifier(&entry).await.map(|()| 0)
    };
    self.exit_code(result)
  }

  #[cfg(feature = "embedded-snapshot")]
  async fn run_app_main(&mut self, entry: &ModuleSpecifier) -> Result<i32, Error> {
    let namespace = self.baked_namespace(entry).await?;
    let main = {
      deno_core::scope!(scope, &mut self.js);
      let namespace = v8::Local::new(scope, &namespace);
      let key = v8::String::new(scope, "main").ok_or(Error::NoApp)?;
      let value = namespace.get(scope, key.into()).ok_or(Error::NoApp)?;
      let function = v8::Local::<v8::Function>::try_from(value)
        .map_err(|_| Error::Load("the entry's export `main` is not a function".into()))?;
      v8::Global::new(scope, function)
    };
    let call = self.js.call_with_args(&main, &[]);
    let value = self
      .js
      .with_event_loop_promise(call, PollEventLoopOptions::default())
      .await
      .map_err(classify)?;
    let code = {
      deno_core::scope!(scope, &mut self.js);
      let value = v8::Local::new(scope, value);
      if value.is_number() {
        value.int32_value(scope).unwrap_or(0)
      } else {
        0
      }
    };
    self.run_event_loop().await?;
    Ok(code)
  }

  /// The namespace of `entry`, a module baked and evaluated already (a
  /// served function's): nothing is loaded, compiled or run, except the
  /// `Deno.cron` jobs its top level declared, which start now.
  #[cfg(feature = "embedded-snapshot")]
  pub async fn load_baked_module(
    &mut self,
    entry: &ModuleSpecifier,
  ) -> Result<v8::Global<v8::Object>, Error> {
    let app = self.app.clone().ok_or(Error::NoApp)?;
    if !app.has_entry(entry) {
      return Err(Error::Load(format!(
        "{entry} is not baked into this runtime's snapshot"
      )));
    }
    self.baked_module(entry).await
  }

  /// The namespace of `specifier`, a module baked into this runtime's
  /// snapshot (see [`user_modules`]), and the start of the `Deno.cron`
  /// jobs its top level declared. A module that is not baked is loaded and
  /// evaluated like any side module.
  pub async fn baked_module(
    &mut self,
    specifier: &ModuleSpecifier,
  ) -> Result<v8::Global<v8::Object>, Error> {
    let namespace = self.baked_namespace(specifier).await?;
    self.start_baked_jobs(specifier).await?;
    Ok(namespace)
  }

  /// Starts the cron jobs `entry`'s modules declared while they were baked.
  async fn start_baked_jobs(&mut self, entry: &ModuleSpecifier) -> Result<(), Error> {
    let arg = {
      deno_core::scope!(scope, &mut self.js);
      let text = v8::String::new(scope, entry.as_str()).ok_or(Error::NoApp)?;
      v8::Global::new(scope, v8::Local::<v8::Value>::from(text))
    };
    self.call_host_hook_with("startBakedJobs", arg).await
  }

  async fn baked_namespace(
    &mut self,
    entry: &ModuleSpecifier,
  ) -> Result<v8::Global<v8::Object>, Error> {
    let (id, evaluation) = self.load_and_evaluate(entry, false).await?;
    self.namespace_once_evaluated(id, evaluation).await
  }

  /// The exit code of a finished program: `Deno.exit`'s, or `result`'s.
  fn exit_code(&mut self, result: Result<i32, Error>) -> Result<i32, Error> {
    let state = self.js.op_state();
    let state = state.borrow();
    if state.has::<OutputClosed>() {
      return Err(Error::OutputClosed);
    }
    match state.try_borrow::<ExitRequest>() {
      Some(ExitRequest(code)) => Ok(*code),
      None => result,
    }
  }

  async fn run_specifier(&mut self, specifier: &ModuleSpecifier) -> Result<(), Error> {
    let (_, evaluation) = self.load_and_evaluate(specifier, true).await?;
    self
      .js
      .run_event_loop(PollEventLoopOptions::default())
      .await
      .map_err(classify)?;
    evaluation.await.map_err(classify)
  }

  async fn run_module(&mut self, path: &Path) -> Result<(), Error> {
    let specifier = main_specifier(path)?;
    self.run_specifier(&specifier).await
  }
}

/// Calls the glue's `globalThis.__kilnBootstrap()` (the run-time half of
/// its set-up) and returns the host hooks it hands back. A call through the
/// API, not a script: a script would be parsed and compiled at every start.
fn call_bootstrap(js: &mut JsRuntime) -> Result<v8::Global<v8::Value>, Error> {
  let failed = |why: String| Error::Init(format!("bootstrap failed: {why}"));
  deno_core::scope!(scope, js);
  v8::tc_scope!(let scope, scope);
  let global = scope.get_current_context().global(scope);
  let key = v8::String::new_external_onebyte_static(scope, b"__kilnBootstrap")
    .ok_or_else(|| failed("no string".into()))?;
  let function = global
    .get(scope, key.into())
    .and_then(|f| v8::Local::<v8::Function>::try_from(f).ok())
    .ok_or_else(|| failed("globalThis.__kilnBootstrap is not a function".into()))?;
  match function.call(scope, global.into(), &[]) {
    Some(hooks) => Ok(v8::Global::new(scope, hooks)),
    None => Err(failed(match scope.exception() {
      Some(e) => e.to_rust_string_lossy(scope),
      None => "terminated".into(),
    })),
  }
}

/// V8 shares one read-only heap between every isolate of a process, taken
/// from the first snapshot it thaws, and trusts later snapshots to match:
/// one that does not crashes V8. Snapshots baked by a build script and by
/// the kiln binary do not match (their read-only heaps differ), so a process
/// must thaw snapshots of one origin. This records the first snapshot's
/// read-only checksum and refuses a different one with an error.
pub fn check_read_only_heap(snapshot: &[u8]) -> Result<(), Error> {
  static FIRST: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
  let Some(checksum) = read_only_checksum(snapshot) else {
    return Err(Error::Init("the snapshot has no V8 header".into()));
  };
  let first = *FIRST.get_or_init(|| checksum);
  if first == checksum {
    return Ok(());
  }
  Err(Error::Init(format!(
    "this process already runs isolates from a snapshot with another read-only heap \
     ({first:08x}, this one {checksum:08x}); V8 cannot mix them: thaw snapshots of one origin \
     (kiln's embedded one, or ones this binary baked) per process"
  )))
}

/// The `file:` specifier of an existing main module.
fn main_specifier(path: &Path) -> Result<ModuleSpecifier, Error> {
  let path = std::path::absolute(path).map_err(|_| Error::ModuleNotFound(path.to_path_buf()))?;
  if !path.is_file() {
    return Err(Error::ModuleNotFound(path));
  }
  ModuleSpecifier::from_file_path(&path).map_err(|_| Error::ModuleNotFound(path))
}

/// A module that failed to load or compile, as one line: `SyntaxError: ...
/// at /path/file.js:1:14`.
fn load_error(err: CoreError) -> Error {
  let deno_core::error::CoreErrorKind::Js(js) = err.as_kind() else {
    return Error::Load(err.to_string());
  };
  let message = exception_message(js);
  let location = js
    .frames
    .first()
    .and_then(|f| {
      let file = f.file_name.as_deref()?;
      let file = ModuleSpecifier::parse(file)
        .ok()
        .and_then(|u| u.to_file_path().ok())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| file.to_string());
      Some(format!(
        " at {file}:{}:{}",
        f.line_number.unwrap_or(0),
        f.column_number.unwrap_or(0)
      ))
    })
    .unwrap_or_default();
  Error::Load(format!("{message}{location}"))
}

/// An exception's message without V8's `Uncaught ` prefix.
fn exception_message(js: &JsError) -> &str {
  js.exception_message
    .strip_prefix("Uncaught ")
    .unwrap_or(&js.exception_message)
}

/// Separates exceptions thrown by user code from load failures.
fn classify(err: CoreError) -> Error {
  match *err.0 {
    CoreErrorKind::Js(js) => Error::Uncaught(js),
    other => Error::Load(other.to_string()),
  }
}
