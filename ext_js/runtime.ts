// kiln_runtime glue: installs the web globals from deno_web and the public
// `Deno` namespace. Runs at bake time, so everything here lands in the
// snapshot heap; what depends on arguments or environment runs in
// `bootstrap()`, which the runtime calls once after thawing.

import { core, internals as coreInternals, primordials } from "ext:core/mod.js";
import {
  op_kiln_args,
  op_kiln_env_delete,
  op_kiln_env_get,
  op_kiln_env_set,
  op_kiln_env_to_object,
  op_kiln_exit,
  op_kiln_navigator,
  op_kiln_no_color,
  op_kiln_print,
  op_kiln_versions,
} from "ext:core/ops";

const {
  ArrayPrototypeJoin,
  ArrayPrototypeMap,
  ArrayPrototypePush,
  JSONStringify,
  String,
  ObjectAssign,
  ObjectDefineProperties,
  ObjectDefineProperty,
  ObjectFreeze,
  ObjectGetOwnPropertyDescriptor,
  ReflectApply,
  SymbolFor,
  TypeError,
} = primordials;

type Exports = Record<string, unknown>;

function load(specifier: string): Exports {
  return core.loadExtScript(specifier) as Exports;
}

// deno_fetch loads deno_telemetry on first use unless these slots are set.
// kiln has no OpenTelemetry: tracing is off, so fetch never starts a span and
// only ever exits the "did not enter" marker.
const DID_NOT_ENTER = SymbolFor("kiln.telemetry.didNotEnter");
function telemetryOff(): never {
  throw new TypeError("OpenTelemetry is not available in kiln");
}
ObjectAssign(coreInternals, {
  __telemetry: ObjectFreeze({
    TRACING_ENABLED: false,
    METRICS_ENABLED: false,
    PROPAGATORS: ObjectFreeze([]),
    DID_NOT_ENTER,
    builtinTracer: telemetryOff,
    ContextManager: ObjectFreeze({ active: telemetryOff }),
    enterSpan: telemetryOff,
    exitSpan(snapshot: unknown): void {
      if (snapshot !== DID_NOT_ENTER) telemetryOff();
    },
  }),
  __telemetryUtil: ObjectFreeze({
    updateSpanFromClientResponse: telemetryOff,
    updateSpanFromError: telemetryOff,
    updateSpanFromRequest: telemetryOff,
  }),
});

// Every deno_web and deno_fetch script is lazily loaded; loading them here
// evaluates them into the snapshot so nothing is read at run time. This table
// is the one list: the load order, and the order in which `loadedScripts`
// keeps every script's exports reachable from this module, so the snapshot
// serialises them in this fixed order rather than in the order of
// deno_core's script-result cache (a HashMap whose order differs per
// process). deno_fetch's scripts come after the telemetry slots above.
const SCRIPTS: [string, string][] = [
  ["webidl", "ext:deno_webidl/00_webidl.js"],
  ["url", "ext:deno_web/00_url.js"],
  ["urlPattern", "ext:deno_web/01_urlpattern.js"],
  ["consoleMod", "ext:deno_web/01_console.js"],
  ["domException", "ext:deno_web/01_dom_exception.js"],
  ["event", "ext:deno_web/02_event.js"],
  ["structuredCloneMod", "ext:deno_web/02_structured_clone.js"],
  ["timers", "ext:deno_web/02_timers.js"],
  ["abortSignal", "ext:deno_web/03_abort_signal.js"],
  ["base64", "ext:deno_web/05_base64.js"],
  ["streams", "ext:deno_web/06_streams.js"],
  ["encoding", "ext:deno_web/08_text_encoding.js"],
  ["file", "ext:deno_web/09_file.js"],
  ["fileReader", "ext:deno_web/10_filereader.js"],
  ["messagePort", "ext:deno_web/13_message_port.js"],
  ["compression", "ext:deno_web/14_compression.js"],
  ["performance", "ext:deno_web/15_performance.js"],
  ["mimesniff", "ext:deno_web/01_mimesniff.js"],
  ["infra", "ext:deno_web/00_infra.js"],
  ["cryptoMod", "ext:deno_crypto/00_crypto.js"],
  ["headers", "ext:deno_fetch/20_headers.js"],
  ["formData", "ext:deno_fetch/21_formdata.js"],
  ["body", "ext:deno_fetch/22_body.js"],
  ["httpClient", "ext:deno_fetch/22_http_client.js"],
  ["request", "ext:deno_fetch/23_request.js"],
  ["response", "ext:deno_fetch/23_response.js"],
  ["fetchMod", "ext:deno_fetch/26_fetch.js"],
  ["eventSource", "ext:deno_fetch/27_eventsource.js"],
  // deno_websocket's module loads this one (serve.ts imports that module).
  ["location", "ext:deno_web/12_location.js"],
];

const scripts: Record<string, Exports> = {};
const loaded: Exports[] = [];
for (let i = 0; i < SCRIPTS.length; i++) {
  const [name, specifier] = SCRIPTS[i];
  scripts[name] = load(specifier);
  ArrayPrototypePush(loaded, scripts[name]);
}
export const loadedScripts = ObjectFreeze(loaded);

const {
  url,
  urlPattern,
  consoleMod,
  domException,
  event,
  structuredCloneMod,
  timers,
  abortSignal,
  base64,
  streams,
  encoding,
  file,
  fileReader,
  messagePort,
  compression,
  performance,
  cryptoMod,
  headers,
  formData,
  request,
  response,
  fetchMod,
  eventSource,
} = scripts;

/** Script exports that other kiln extensions build on. */
export const webScripts = ObjectFreeze({
  streams,
  request,
  response,
  abortSignal,
  event,
});

/**
 * Functions the Rust host calls into (e.g. `serve`), set by extensions at
 * bake time. `bootstrap()` hands this object to the host; user code cannot
 * reach it.
 */
export const hostHooks: Record<string, unknown> = {};

function writable(value: unknown): PropertyDescriptor {
  return { value, writable: true, enumerable: false, configurable: true };
}

function readOnly(value: unknown): PropertyDescriptor {
  return { value, writable: false, enumerable: true, configurable: true };
}

const console = new (consoleMod.Console as new (
  print: (msg: string, level: number) => void,
) => unknown)((msg: string, level: number) => op_kiln_print(msg, level > 1));

ObjectDefineProperties(globalThis, {
  // console
  console: writable(console),
  // timers
  setTimeout: writable(timers.setTimeout),
  clearTimeout: writable(timers.clearTimeout),
  setInterval: writable(timers.setInterval),
  clearInterval: writable(timers.clearInterval),
  queueMicrotask: writable(core.queueUserMicrotask ?? queueMicrotask),
  // URL
  URL: writable(url.URL),
  URLSearchParams: writable(url.URLSearchParams),
  URLPattern: writable(urlPattern.URLPattern),
  // encoding
  TextEncoder: writable(encoding.TextEncoder),
  TextDecoder: writable(encoding.TextDecoder),
  TextEncoderStream: writable(encoding.TextEncoderStream),
  TextDecoderStream: writable(encoding.TextDecoderStream),
  atob: writable(base64.atob),
  btoa: writable(base64.btoa),
  // events
  DOMException: writable(domException.DOMException),
  Event: writable(event.Event),
  EventTarget: writable(event.EventTarget),
  CustomEvent: writable(event.CustomEvent),
  ErrorEvent: writable(event.ErrorEvent),
  CloseEvent: writable(event.CloseEvent),
  MessageEvent: writable(event.MessageEvent),
  ProgressEvent: writable(event.ProgressEvent),
  PromiseRejectionEvent: writable(event.PromiseRejectionEvent),
  reportError: writable(event.reportError),
  AbortController: writable(abortSignal.AbortController),
  AbortSignal: writable(abortSignal.AbortSignal),
  // streams
  ReadableStream: writable(streams.ReadableStream),
  ReadableStreamDefaultReader: writable(streams.ReadableStreamDefaultReader),
  ReadableStreamBYOBReader: writable(streams.ReadableStreamBYOBReader),
  ReadableStreamBYOBRequest: writable(streams.ReadableStreamBYOBRequest),
  ReadableByteStreamController: writable(streams.ReadableByteStreamController),
  ReadableStreamDefaultController: writable(
    streams.ReadableStreamDefaultController,
  ),
  WritableStream: writable(streams.WritableStream),
  WritableStreamDefaultWriter: writable(streams.WritableStreamDefaultWriter),
  WritableStreamDefaultController: writable(
    streams.WritableStreamDefaultController,
  ),
  TransformStream: writable(streams.TransformStream),
  TransformStreamDefaultController: writable(
    streams.TransformStreamDefaultController,
  ),
  ByteLengthQueuingStrategy: writable(streams.ByteLengthQueuingStrategy),
  CountQueuingStrategy: writable(streams.CountQueuingStrategy),
  CompressionStream: writable(compression.CompressionStream),
  DecompressionStream: writable(compression.DecompressionStream),
  // structured data
  structuredClone: writable(structuredCloneMod.structuredClone),
  MessageChannel: writable(messagePort.MessageChannel),
  MessagePort: writable(messagePort.MessagePort),
  Blob: writable(file.Blob),
  File: writable(file.File),
  FileReader: writable(fileReader.FileReader),
  // performance
  Performance: writable(performance.Performance),
  PerformanceEntry: writable(performance.PerformanceEntry),
  PerformanceMark: writable(performance.PerformanceMark),
  PerformanceMeasure: writable(performance.PerformanceMeasure),
  performance: writable(performance.performance),
  // Web Crypto. While baking, `crypto` is a stand-in (see below): code may
  // look at it, not use it.
  crypto: {
    get(): unknown {
      return baking ? cryptoWhileBaking : cryptoMod.crypto;
    },
    enumerable: true,
    configurable: true,
  },
  Crypto: writable(cryptoMod.Crypto),
  CryptoKey: writable(cryptoMod.CryptoKey),
  SubtleCrypto: writable(cryptoMod.SubtleCrypto),
  // fetch
  Headers: writable(headers.Headers),
  FormData: writable(formData.FormData),
  Request: writable(request.Request),
  Response: writable(response.Response),
  fetch: writable(fetchMod.fetch),
  EventSource: writable(eventSource.EventSource),
  // `WebSocket` is defined by serve.ts, with `Deno.upgradeWebSocket`.
});

(event.saveGlobalThisReference as (g: typeof globalThis) => void)(globalThis);

/**
 * What `crypto` is while code is baked. Libraries feature-detect Web Crypto
 * at their top level (`if (crypto && crypto.subtle)`), which must not stop
 * a bake; using it must: random values or keys made then would be the same
 * in every launch, and its key objects live in a heap a snapshot cannot
 * hold. So each method throws while baking and, once thawed, forwards to
 * the real object: a reference kept at bake (`const { subtle } = crypto`)
 * works at run time.
 */
function forwarding(
  target: () => Record<string, unknown>,
  methods: string[],
): Record<string, unknown> {
  const standIn: Record<string, unknown> = {};
  for (let i = 0; i < methods.length; i++) {
    const name = methods[i];
    standIn[name] = function (...args: unknown[]): unknown {
      if (baking) {
        throw new Error(
          "cannot bake: Web Crypto (crypto) was used while the code was evaluated (use it at launch: in main() or a handler)",
        );
      }
      const real = target();
      return ReflectApply(real[name] as () => unknown, real, args);
    };
  }
  return standIn;
}
const realCrypto = () => cryptoMod.crypto as Record<string, unknown>;
const subtleWhileBaking = ObjectFreeze(forwarding(
  () => realCrypto().subtle as Record<string, unknown>,
  [
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "digest",
    "generateKey",
    "deriveKey",
    "deriveBits",
    "importKey",
    "exportKey",
    "wrapKey",
    "unwrapKey",
  ],
));
const cryptoWhileBaking = ObjectFreeze({
  ...forwarding(realCrypto, ["getRandomValues", "randomUUID"]),
  subtle: subtleWhileBaking,
});


/**
 * Internal symbol under which test-only helpers live (`Deno[Deno.internal]`),
 * as in Deno.
 */
const internalSymbol = SymbolFor("Deno.internal");

/** Helpers reachable through `Deno[Deno.internal]`; extensions add to it. */
export const internals: Record<string, unknown> = {};

/**
 * The public `Deno` namespace. Extensions add their members (e.g. `cron`)
 * with `defineDenoMember` at bake time.
 */
export const denoNs: Record<string | symbol, unknown> = {};

export function defineDenoMember(name: string, value: unknown): void {
  ObjectDefineProperty(denoNs, name, readOnly(value));
}

// Versions are fixed by the build (the snapshot fingerprint guarantees the
// runtime links the same V8), so baking them is safe.
const [kilnVersion, v8Version] = op_kiln_versions() as [string, string];

ObjectDefineProperties(denoNs, {
  version: readOnly(ObjectFreeze({ kiln: kilnVersion, v8: v8Version })),
  internal: readOnly(internalSymbol),
  [internalSymbol]: { value: internals, enumerable: false, configurable: false },
  exit: readOnly(function exit(code = 0): never {
    op_kiln_exit(code | 0);
    // The op terminates execution; this only runs if termination is caught.
    throw new Error("Deno.exit: execution terminated");
  }),
  // Reads through ops every time: what it holds is run-time configuration
  // (empty while baking; the process environment for `kiln run`; a
  // function's own variables, read-only, under `kiln serve`).
  env: readOnly(ObjectFreeze({
    get(key: string): string | undefined {
      envReadWhileBaking ||= baking;
      return (op_kiln_env_get(String(key)) as string | null) ?? undefined;
    },
    has(key: string): boolean {
      envReadWhileBaking ||= baking;
      return op_kiln_env_get(String(key)) !== null;
    },
    toObject(): Record<string, string> {
      envReadWhileBaking ||= baking;
      return op_kiln_env_to_object() as Record<string, string>;
    },
    set(key: string, value: string): void {
      op_kiln_env_set(String(key), String(value));
    },
    delete(key: string): void {
      op_kiln_env_delete(String(key));
    },
  })),
});

/** `navigator`: what libraries sniff. The version is fixed by the build. */
class Navigator {
  get userAgent(): string {
    return `kiln/${kilnVersion}`;
  }
  get hardwareConcurrency(): number {
    return (op_kiln_navigator() as [number, string])[0];
  }
  get language(): string {
    return (op_kiln_navigator() as [number, string])[1];
  }
  get languages(): string[] {
    return [this.language];
  }
}

ObjectDefineProperties(globalThis, {
  self: {
    get(): typeof globalThis {
      return globalThis;
    },
    enumerable: true,
    configurable: true,
  },
  navigator: readOnly(new Navigator()),
  Navigator: writable(Navigator),
});

let baking = false;
// The entry (a program, a served function) whose modules are being baked.
let bakingEntry = "";
// Variables exist only at launch: code that reads them while it is baked
// would bake their absence.
let envReadWhileBaking = false;
let internalDeno: PropertyDescriptor | undefined;
let runtimeConsole: PropertyDescriptor | undefined;

/** One argument of a console call, as text, without the inspector. */
function bakeFormat(value: unknown): string {
  if (typeof value === "string") return value;
  try {
    const json = JSONStringify(value);
    if (json !== undefined) return json;
  } catch {
    // Cycles, BigInts: fall through.
  }
  return String(value);
}

/**
 * The console user code sees while it is baked: deno_web's console is
 * backed by an object the snapshotting runtime cannot create, so this one
 * formats plainly and prints at once.
 */
function makeBakeConsole(): Record<string, unknown> {
  const out = (...args: unknown[]) =>
    op_kiln_print(ArrayPrototypeJoin(ArrayPrototypeMap(args, bakeFormat), " ") + "\n", false);
  const err = (...args: unknown[]) =>
    op_kiln_print(ArrayPrototypeJoin(ArrayPrototypeMap(args, bakeFormat), " ") + "\n", true);
  const nothing = () => {};
  return {
    log: out,
    info: out,
    debug: out,
    dir: out,
    dirxml: out,
    table: out,
    warn: err,
    error: err,
    trace: err,
    assert: (condition: unknown, ...args: unknown[]) => {
      if (!condition) err("Assertion failed:", ...args);
    },
    count: nothing,
    countReset: nothing,
    group: out,
    groupCollapsed: out,
    groupEnd: nothing,
    time: nothing,
    timeEnd: nothing,
    timeLog: nothing,
    clear: nothing,
  };
}

/**
 * While user code is baked into a snapshot (`kiln compile`, served
 * functions), the entry whose modules are being evaluated; nothing that
 * runs may start work the heap cannot hold (timers, ops, resources).
 * `undefined` otherwise.
 */
export function bakingEntrySpecifier(): string | undefined {
  return baking ? bakingEntry : undefined;
}

/**
 * Called before user code is evaluated into a snapshot: it sees the public
 * `Deno` namespace (with no arguments and an empty environment) as it will
 * at launch.
 */
function bakeBegin(serving = false): void {
  if (serving) {
    (hostHooks.compileRequestPath as () => void)();
  }
  internalDeno = ObjectGetOwnPropertyDescriptor(globalThis, "Deno");
  ObjectDefineProperty(globalThis, "Deno", {
    value: denoNs,
    writable: false,
    enumerable: false,
    configurable: true,
  });
  ObjectDefineProperty(denoNs, "args", readOnly(ObjectFreeze([])));
  runtimeConsole = ObjectGetOwnPropertyDescriptor(globalThis, "console");
  ObjectDefineProperty(globalThis, "console", writable(makeBakeConsole()));
  baking = true;
}

/**
 * Called after user code was evaluated, before the heap is serialized: puts
 * back the namespace deno_core binds ops through while it thaws.
 */
function bakeEnd(): void {
  baking = false;
  if (internalDeno) {
    ObjectDefineProperty(globalThis, "Deno", internalDeno);
  }
  internalDeno = undefined;
  if (runtimeConsole) {
    ObjectDefineProperty(globalThis, "console", runtimeConsole);
  }
  runtimeConsole = undefined;
}

/** Before each entry's modules are evaluated at bake. */
function bakeEntryBegin(entry: string): void {
  bakingEntry = entry;
  envReadWhileBaking = false;
}

/** After each entry's modules were evaluated at bake. */
function bakeEntryEnd(): void {
  if (envReadWhileBaking) {
    envReadWhileBaking = false;
    throw new Error(
      "cannot bake: the code read Deno.env while it was evaluated (variables exist only at launch: read them in main() or in a handler)",
    );
  }
}

ObjectDefineProperties(globalThis, {
  __kilnBakeEntryBegin: {
    value: bakeEntryBegin,
    writable: false,
    enumerable: false,
    configurable: true,
  },
  __kilnBakeEntryEnd: {
    value: bakeEntryEnd,
    writable: false,
    enumerable: false,
    configurable: true,
  },
  __kilnBakeBegin: {
    value: bakeBegin,
    writable: false,
    enumerable: false,
    configurable: true,
  },
  __kilnBakeEnd: {
    value: bakeEnd,
    writable: false,
    enumerable: false,
    configurable: true,
  },
});

/**
 * Run-time half of the set-up: called once by the runtime after the snapshot
 * is thawed; everything that depends on this process goes here. With
 * `compileOnly`, returns at once: see the end of this module.
 */
function bootstrap(compileOnly = false): Record<string, unknown> {
  if (compileOnly) {
    return hostHooks;
  }
  delete (globalThis as Record<string, unknown>).__kilnBootstrap;
  delete (globalThis as Record<string, unknown>).__kilnBakeBegin;
  delete (globalThis as Record<string, unknown>).__kilnBakeEnd;
  delete (globalThis as Record<string, unknown>).__kilnBakeEntryBegin;
  delete (globalThis as Record<string, unknown>).__kilnBakeEntryEnd;
  // deno_core binds ops through `globalThis.Deno.core` while it thaws, so the
  // swap to the public namespace (no `Deno.core`) happens here, not at bake.
  ObjectDefineProperty(globalThis, "Deno", {
    value: denoNs,
    writable: false,
    enumerable: false,
    configurable: false,
  });
  delete (globalThis as Record<string, unknown>).__bootstrap;
  (performance.setTimeOrigin as () => void)();
  // Colors only on terminals, and never with NO_COLOR set.
  const [stdoutNoColor, stderrNoColor] = op_kiln_no_color() as [
    boolean,
    boolean,
  ];
  (consoleMod.setNoColorFns as (a: () => boolean, b: () => boolean) => void)(
    () => stdoutNoColor,
    () => stderrNoColor,
  );
  ObjectDefineProperty(
    denoNs,
    "args",
    readOnly(ObjectFreeze(op_kiln_args() as string[])),
  );
  return hostHooks;
}

ObjectDefineProperty(globalThis, "__kilnBootstrap", {
  value: bootstrap,
  writable: false,
  enumerable: false,
  configurable: true,
});

// Every start runs `bootstrap` and what it calls. V8 compiles a function on
// its first call and the bake keeps compiled functions in the snapshot, so
// calling them here, at bake, spares each start their parse and compile
// (about 0.2 ms; benches/RESULTS.md section 11). Harmless: `bootstrap` sets
// the time origin and the colour functions again at every start.
bootstrap(true);
(performance.setTimeOrigin as () => void)();
(consoleMod.setNoColorFns as (a: () => boolean, b: () => boolean) => void)(
  () => true,
  () => true,
);
