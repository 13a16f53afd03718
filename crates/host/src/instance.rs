//! One function instance: a `kiln::Runtime` (one V8 isolate) on its own
//! thread with a current-thread tokio runtime, fed requests over a channel.
//!
//! The host never touches the isolate except through its thread-safe handle
//! (to terminate it). An instance that was terminated, ran out of heap or
//! hit an uncaught error is dead: its thread ends and the pool discards it.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::PoisonError;
use std::sync::atomic::AtomicBool;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering;
use std::time::Duration;
use std::time::Instant;

use deno_core::v8;
use tokio::sync::mpsc;
use tokio::sync::oneshot;

use super::cron::HostCronHandler;
use super::metrics::Metrics;
use super::metrics::TerminationCause;
use super::snapshots::StartFrom;
use kiln::runtime::ModuleAccess;
use kiln::runtime::Runtime;
use kiln_extensions::runtime::ExitHook;
use kiln_extensions::serve::ServeInbox;
use kiln_extensions::serve::ServeObserver;
use kiln_extensions::serve::ServeRequest;

/// What an instance is started with.
#[derive(Clone)]
pub(crate) struct InstanceSpec {
  pub function: Arc<str>,
  pub path: PathBuf,
  /// The function's variables (`Deno.env`, the `env` argument).
  pub env: Arc<std::collections::BTreeMap<String, String>>,
  /// Where the function may load modules from (its served directory).
  pub modules: ModuleAccess,
  pub max_heap_bytes: usize,
  /// Bound on module load and evaluation (top-level code).
  pub start_timeout: Duration,
  pub metrics: Arc<Metrics>,
  /// The snapshot instances thaw.
  pub start_from: StartFrom,
  /// Where V8 code caches of loaded modules go.
  pub code_cache_dir: Option<PathBuf>,
  /// The fleet's cron store (`--cron-store`); jobs run locally without.
  pub cron_store: Option<kiln_extensions::cron::postgres::PostgresCronStore>,
}

/// Why an instance could not start; the message goes to the client (500)
/// and the log.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StartError {
  #[error("function '{function}' failed to load: {reason}")]
  Load { function: String, reason: String },
  #[error("function '{function}' did not finish loading within {ms} ms")]
  Timeout { function: String, ms: u128 },
  #[error("function '{function}' ran out of memory while loading (limit {mb} MiB)")]
  OutOfMemory { function: String, mb: usize },
  #[error("function '{function}': cannot start an instance thread: {reason}")]
  Thread { function: String, reason: String },
}

/// Why a request got no instance (the host answers 503).
#[derive(Debug, Clone, thiserror::Error)]
pub enum AcquireError {
  #[error("function '{0}': the host is shutting down")]
  ShuttingDown(String),
  #[error("function '{function}': all {instances} instances stayed busy for {ms} ms")]
  Busy {
    function: String,
    instances: usize,
    ms: u128,
  },
  #[error("function '{function}' was still loading after {ms} ms")]
  StillLoading { function: String, ms: u128 },
  #[error(transparent)]
  Start(#[from] StartError),
}

/// How an instance ended, set once by whoever ended it first.
#[derive(Default)]
pub(crate) struct Fate {
  cause: Mutex<Option<(TerminationCause, String)>>,
}

impl Fate {
  fn set(&self, cause: TerminationCause, detail: String) {
    let mut slot = self.cause.lock().unwrap_or_else(PoisonError::into_inner);
    if slot.is_none() {
      *slot = Some((cause, detail));
    }
  }

  pub(crate) fn get(&self) -> Option<(TerminationCause, String)> {
    self
      .cause
      .lock()
      .unwrap_or_else(PoisonError::into_inner)
      .clone()
  }
}

/// A running instance, owned by its function's pool.
pub(crate) struct Instance {
  inbox: mpsc::Sender<ServeRequest>,
  isolate: v8::IsolateHandle,
  fate: Arc<Fate>,
  alive: Arc<AtomicBool>,
  stop: Option<oneshot::Sender<()>>,
  thread: Option<std::thread::JoinHandle<()>>,
  pub(crate) last_used: Instant,
  /// Runs the function's `Deno.cron` jobs (see `host::cron`).
  pub(crate) owns_cron: bool,
  pub(crate) cron_jobs: Arc<AtomicUsize>,
}

impl Instance {
  /// Starts an instance and waits until its module is loaded and serving.
  pub(crate) async fn start(spec: InstanceSpec, owns_cron: bool) -> Result<Instance, StartError> {
    let started = Instant::now();
    let result = Self::start_inner(&spec, owns_cron).await;
    spec
      .metrics
      .instance_start(&spec.function, result.is_ok(), started.elapsed());
    result
  }

  async fn start_inner(spec: &InstanceSpec, owns_cron: bool) -> Result<Instance, StartError> {
    let (inbox_tx, inbox_rx) = mpsc::channel(1);
    let (isolate_tx, isolate_rx) = oneshot::channel();
    let (ready_tx, ready_rx) = oneshot::channel();
    let (stop_tx, stop_rx) = oneshot::channel();
    let fate = Arc::new(Fate::default());
    let alive = Arc::new(AtomicBool::new(true));
    let cron_jobs = Arc::new(AtomicUsize::new(0));
    let thread = {
      let thread_spec = spec.clone();
      let fate = fate.clone();
      let alive = alive.clone();
      let cron_jobs = cron_jobs.clone();
      std::thread::Builder::new()
        .name(format!("kiln-fn-{}", spec.function))
        .spawn(move || {
          let body = InstanceThread {
            spec: thread_spec,
            owns_cron,
            fate,
            cron_jobs,
          };
          body.run(inbox_rx, isolate_tx, ready_tx, stop_rx);
          alive.store(false, Ordering::Release);
        })
        .map_err(|e| StartError::Thread {
          function: spec.function.to_string(),
          reason: e.to_string(),
        })?
    };
    let load_error = |reason: String| StartError::Load {
      function: spec.function.to_string(),
      reason,
    };
    let isolate = isolate_rx
      .await
      .map_err(|_| load_error("the instance thread ended during start-up".into()))?
      .map_err(load_error)?;
    let ready = tokio::time::timeout(spec.start_timeout, ready_rx).await;
    let outcome = match ready {
      Ok(Ok(Ok(()))) => Ok(()),
      Ok(Ok(Err(reason))) => Err(reason),
      Ok(Err(_)) => Err("the instance thread ended during start-up".to_string()),
      Err(_) => {
        fate.set(TerminationCause::Timeout, String::new());
        isolate.terminate_execution();
        return Err(StartError::Timeout {
          function: spec.function.to_string(),
          ms: spec.start_timeout.as_millis(),
        });
      }
    };
    if let Err(reason) = outcome {
      return Err(match fate.get() {
        Some((TerminationCause::OutOfMemory, _)) => StartError::OutOfMemory {
          function: spec.function.to_string(),
          mb: spec.max_heap_bytes >> 20,
        },
        _ => load_error(reason),
      });
    }
    Ok(Instance {
      inbox: inbox_tx,
      isolate,
      fate,
      alive,
      stop: Some(stop_tx),
      thread: Some(thread),
      last_used: Instant::now(),
      owns_cron,
      cron_jobs,
    })
  }

  /// Hands a request to the instance; false if the instance is gone or
  /// busy (the request is dropped, which its waiters see).
  pub(crate) fn send(&self, request: ServeRequest) -> bool {
    self.inbox.try_send(request).is_ok()
  }

  /// Stops JS execution now (from any thread); the instance is dead after.
  pub(crate) fn terminate(&self, cause: TerminationCause) {
    self.fate.set(cause, String::new());
    self.isolate.terminate_execution();
  }

  /// Alive: thread running and not terminated.
  pub(crate) fn is_alive(&self) -> bool {
    self.alive.load(Ordering::Acquire) && self.fate.get().is_none()
  }

  /// How the instance died, if it did.
  pub(crate) fn fate(&self) -> Option<(TerminationCause, String)> {
    self.fate.get()
  }

  /// Whether it holds cron jobs that only it runs.
  pub(crate) fn runs_cron_jobs(&self) -> bool {
    self.owns_cron && self.cron_jobs.load(Ordering::Relaxed) > 0
  }

  /// Stops the instance (its cron jobs with it) and returns its thread to
  /// join.
  pub(crate) fn stop(mut self) -> Option<std::thread::JoinHandle<()>> {
    if let Some(stop) = self.stop.take() {
      let _ = stop.send(());
    }
    self.thread.take()
  }
}

impl Drop for Instance {
  fn drop(&mut self) {
    if let Some(stop) = self.stop.take() {
      let _ = stop.send(());
    }
  }
}

/// Logs and counts errors that escape a function's handlers.
struct UnhandledErrors {
  function: Arc<str>,
  metrics: Arc<Metrics>,
}

impl ServeObserver for UnhandledErrors {
  fn unhandled_error(&self, request_id: Option<&str>, message: &str) {
    self.metrics.unhandled_error(&self.function);
    // Function and id first: the message may span lines (its stack).
    tracing::error!(
      "function '{}' request_id={}: unhandled error (answered to no client): {message}",
      self.function,
      request_id.unwrap_or("-")
    );
  }
}

/// The instance's own thread.
struct InstanceThread {
  spec: InstanceSpec,
  owns_cron: bool,
  fate: Arc<Fate>,
  cron_jobs: Arc<AtomicUsize>,
}

type IsolateReply = oneshot::Sender<Result<v8::IsolateHandle, String>>;

impl InstanceThread {
  fn run(
    self,
    inbox: mpsc::Receiver<ServeRequest>,
    isolate_tx: IsolateReply,
    ready_tx: oneshot::Sender<Result<(), String>>,
    stop_rx: oneshot::Receiver<()>,
  ) {
    let tokio = match tokio::runtime::Builder::new_current_thread()
      .enable_all()
      .build()
    {
      Ok(rt) => rt,
      Err(e) => {
        let _ = isolate_tx.send(Err(format!(
          "cannot create the instance's tokio runtime: {e}"
        )));
        return;
      }
    };
    tokio.block_on(self.serve(inbox, isolate_tx, ready_tx, stop_rx));
  }

  async fn serve(
    self,
    inbox: mpsc::Receiver<ServeRequest>,
    isolate_tx: IsolateReply,
    ready_tx: oneshot::Sender<Result<(), String>>,
    stop_rx: oneshot::Receiver<()>,
  ) {
    let cron = HostCronHandler::new(
      self.owns_cron,
      self.spec.function.clone(),
      self.spec.metrics.clone(),
      self.cron_jobs.clone(),
      self.spec.cron_store.as_ref(),
    );
    let options = kiln::RuntimeOptions {
      env: kiln::runtime::Env::ReadOnly(self.spec.env.clone()),
      code_cache_dir: self.spec.code_cache_dir.clone(),
      ..Default::default()
    };
    let mut builder = Runtime::builder()
      .options(options)
      .max_heap_bytes(self.spec.max_heap_bytes)
      .module_access(self.spec.modules.clone())
      .cron_handler(cron);
    match &self.spec.start_from {
      StartFrom::Embedded => {}
      StartFrom::Base(image) | StartFrom::Function(image) => builder = builder.app(image.clone()),
    }
    let mut runtime = match builder.build() {
      Ok(runtime) => runtime,
      Err(e) => {
        let _ = isolate_tx.send(Err(e.to_string()));
        return;
      }
    };
    let js = runtime.js_runtime();
    let isolate = js.v8_isolate().thread_safe_handle();
    // Set when the instance must end at once (heap limit, `Deno.exit()`):
    // a terminated isolate does not always make the event loop return.
    let ended = Arc::new(tokio::sync::Notify::new());
    {
      let isolate = isolate.clone();
      let fate = self.fate.clone();
      let ended = ended.clone();
      js.add_near_heap_limit_callback(move |current, _initial| {
        fate.set(TerminationCause::OutOfMemory, String::new());
        isolate.terminate_execution();
        ended.notify_one();
        // Room for the termination to unwind; the instance is discarded.
        current.saturating_mul(2)
      });
    }
    let observer = UnhandledErrors {
      function: self.spec.function.clone(),
      metrics: self.spec.metrics.clone(),
    };
    js.op_state()
      .borrow_mut()
      .put(ServeInbox::new(inbox, Box::new(observer)));
    {
      let fate = self.fate.clone();
      let ended = ended.clone();
      let hook = move |code: i32| {
        fate.set(TerminationCause::Exit, format!("Deno.exit({code})"));
        ended.notify_one();
      };
      js.op_state().borrow_mut().put(ExitHook(Box::new(hook)));
    }
    if isolate_tx.send(Ok(isolate)).is_err() {
      return;
    }

    let started = async {
      let namespace = match &self.spec.start_from {
        // Baked with its top level: nothing to load or run.
        StartFrom::Function(_) => match deno_core::ModuleSpecifier::from_file_path(&self.spec.path)
        {
          Ok(specifier) => runtime.load_baked_module(&specifier).await,
          Err(()) => Err(kiln::Error::ModuleNotFound(self.spec.path.clone())),
        },
        StartFrom::Embedded | StartFrom::Base(_) => runtime.load_main_module(&self.spec.path).await,
      }
      .map_err(|e| e.to_string())?;
      runtime
        .call_host_hook("serve", namespace)
        .await
        .map_err(|e| e.to_string())
    };
    if let Err(reason) = started.await {
      let _ = ready_tx.send(Err(reason));
      return;
    }
    if ready_tx.send(Ok(())).is_err() {
      return;
    }

    tokio::select! {
      result = runtime.run_event_loop() => {
        if let Err(e) = result {
          // Terminations already recorded their cause; anything else is an
          // error in the function's own code that the glue could not catch.
          self.fate.set(TerminationCause::UncaughtError, e.to_string());
          tracing::warn!(function = %self.spec.function, "instance ended: {e}");
        }
      }
      () = ended.notified() => {
        let cause = self.fate.get().map_or("ended", |(cause, _)| cause.label());
        tracing::warn!(function = %self.spec.function, "instance ended: {cause}");
      }
      _ = stop_rx => {}
    }
  }
}
