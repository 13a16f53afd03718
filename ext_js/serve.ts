// kiln_serve glue: runs a function module's `fetch` handler for the requests
// `kiln serve` sends to this isolate, and provides WebSockets (the `WebSocket`
// client and `Deno.upgradeWebSocket`). The host calls `hostHooks.serve(ns)`
// with the module namespace once the module has been evaluated.

import { core, primordials } from "ext:core/mod.js";
import {
  op_kiln_env_to_object,
  op_serve_client_gone,
  op_serve_close,
  op_serve_error,
  op_serve_finish,
  op_serve_next,
  op_serve_read,
  op_serve_respond,
  op_serve_unhandled,
  op_serve_upgrade,
  op_serve_websocket_accept,
  op_serve_write,
} from "ext:core/ops";
import {
  defineDenoMember,
  hostHooks,
  webScripts,
} from "ext:kiln_runtime/runtime.ts";
// A static import, not `core.createLazyLoader`: deno_core 0.413 records a
// lazily loaded ES module as consumed by the bake only when it is imported,
// and drops the source text of one it thinks unconsumed from the snapshot
// (its functions then compile from another file's text at run time).
import * as websocketModule from "ext:deno_websocket/01_websocket.js";

const {
  ArrayPrototypeFilter,
  ArrayPrototypeIncludes,
  ArrayPrototypeJoin,
  ArrayPrototypeMap,
  ArrayPrototypePush,
  ArrayPrototypeSome,
  Promise,
  StringPrototypeToLowerCase,
  StringPrototypeTrim,
  WeakMapPrototypeDelete,
  WeakMapPrototypeGet,
  WeakMapPrototypeSet,
  SafeWeakMap,
  ObjectDefineProperty,
  ObjectFreeze,
  PromiseResolve,
  ObjectPrototypeIsPrototypeOf,
  PromisePrototypeThen,
  String,
  StringPrototypeIncludes,
  StringPrototypeSplit,
  TypeError,
  TypedArrayPrototypeGetSymbolToStringTag,
} = primordials;

type Header = [string, string];
type NextRequest = [number, string, string, Header[], boolean];

/** The third argument of `fetch`, as on Workers. */
interface Context {
  waitUntil(promise: unknown): void;
  passThroughOnException(): void;
}

interface FetchHandler {
  fetch(
    request: Request,
    env: Readonly<Record<string, string>>,
    ctx: Context,
  ): Response | Promise<Response>;
}

const { Request } = webScripts.request as {
  Request: typeof globalThis.Request;
};
const { ResponsePrototype, newInnerResponse, fromInnerResponse } = webScripts
  .response as {
    ResponsePrototype: Response;
    newInnerResponse: (status: number) => InnerResponse;
    fromInnerResponse: (inner: InnerResponse, guard: string) => Response;
  };
interface InnerResponse {
  headerList: Header[];
}
const { Event, dispatch, setEventTargetData } = webScripts.event as {
  Event: typeof globalThis.Event;
  dispatch: (target: EventTarget, event: Event) => void;
  setEventTargetData: (target: EventTarget) => void;
};
const ws = websocketModule as unknown as {
  WebSocket: typeof globalThis.WebSocket;
  createWebSocketBranded: () => ServerSocket;
  _rid: symbol;
  _role: symbol;
  _readyState: symbol;
  _protocol: symbol;
  _eventLoop: symbol;
  _idleTimeoutDuration: symbol;
  _serverHandleIdleTimeout: symbol;
  SERVER: unknown;
};
// deno_websocket's socket fields are symbol-keyed.
type ServerSocket = WebSocket & Record<symbol, unknown>;
const { ReadableStream } = webScripts.streams as {
  ReadableStream: typeof globalThis.ReadableStream;
};
const { AbortController } = webScripts.abortSignal as {
  AbortController: typeof globalThis.AbortController;
};

/** The error with its stack, without the host's own frames. */
function errorText(error: unknown): string {
  if (!(error instanceof Error)) {
    return `Uncaught ${String(error)}`;
  }
  const stack = error.stack ?? `${error.name}: ${error.message}`;
  return ArrayPrototypeJoin(
    ArrayPrototypeFilter(
      StringPrototypeSplit(stack, "\n"),
      (line: string) => !StringPrototypeIncludes(line, "(ext:kiln_serve/"),
    ),
    "\n",
  );
}

function requestBody(rid: number): ReadableStream<Uint8Array> {
  return new ReadableStream({
    async pull(controller) {
      const chunk = (await op_serve_read(rid)) as Uint8Array | null;
      if (chunk === null) {
        controller.close();
      } else {
        controller.enqueue(chunk);
      }
    },
  });
}

/** Streams the body out; false if the client went away first. */
async function writeBody(
  rid: number | typeof COMPILE_ONLY,
  body: ReadableStream<Uint8Array>,
  abort: AbortController,
): Promise<boolean> {
  if (rid === COMPILE_ONLY) {
    return true;
  }
  const reader = body.getReader();
  while (true) {
    const { value, done } = await reader.read();
    if (done) {
      return true;
    }
    if (TypedArrayPrototypeGetSymbolToStringTag(value) !== "Uint8Array") {
      await reader.cancel();
      throw new TypeError("Response body chunks must be Uint8Array");
    }
    if (!(await op_serve_write(rid, value))) {
      // The client went away: stop producing the body.
      abort.abort();
      await reader.cancel();
      return false;
    }
  }
}

/** Sockets of responses made by `Deno.upgradeWebSocket`, not yet sent. */
const upgrades = new SafeWeakMap<Response, ServerSocket>();

/** Whether a comma-separated header holds `token` (case-insensitive). */
function headerHas(value: string | null, token: string): boolean {
  return value !== null &&
    ArrayPrototypeSome(
      StringPrototypeSplit(value, ","),
      (option: string) =>
        StringPrototypeToLowerCase(StringPrototypeTrim(option)) === token,
    );
}

interface UpgradeOptions {
  protocol?: string;
  idleTimeout?: number;
}

/**
 * `Deno.upgradeWebSocket(request)`, as in Deno: checks the handshake
 * headers and returns the `101` response to return from the handler and
 * the server `socket`, which opens once that response was sent.
 */
function upgradeWebSocket(
  request: Request,
  options: UpgradeOptions = {},
): { response: Response; socket: WebSocket } {
  const headers = request.headers;
  if (!headerHas(headers.get("upgrade"), "websocket")) {
    throw new TypeError(
      "Invalid Header: 'upgrade' header must contain 'websocket'",
    );
  }
  if (!headerHas(headers.get("connection"), "upgrade")) {
    throw new TypeError(
      "Invalid Header: 'connection' header must contain 'Upgrade'",
    );
  }
  const key = headers.get("sec-websocket-key");
  if (key === null) {
    throw new TypeError(
      "Invalid Header: 'sec-websocket-key' header must be set",
    );
  }
  const inner = newInnerResponse(101);
  inner.headerList = [
    ["upgrade", "websocket"],
    ["connection", "Upgrade"],
    ["sec-websocket-accept", op_serve_websocket_accept(key) as string],
  ];
  const offered = ArrayPrototypeMap(
    StringPrototypeSplit(headers.get("sec-websocket-protocol") ?? "", ","),
    (p: string) => StringPrototypeTrim(p),
  );
  if (options.protocol !== undefined) {
    if (!ArrayPrototypeIncludes(offered, options.protocol)) {
      throw new TypeError(
        `Protocol '${options.protocol}' not in the request's protocol list (non negotiable)`,
      );
    }
    ArrayPrototypePush(inner.headerList, [
      "sec-websocket-protocol",
      options.protocol,
    ]);
  }
  const socket = ws.createWebSocketBranded();
  setEventTargetData(socket);
  socket[ws._role] = ws.SERVER;
  socket[ws._idleTimeoutDuration] = options.idleTimeout ?? 120;
  const response = fromInnerResponse(inner, "immutable");
  WeakMapPrototypeSet(upgrades, response, socket);
  return { response, socket };
}

defineDenoMember("upgradeWebSocket", upgradeWebSocket);
ObjectDefineProperty(globalThis, "WebSocket", {
  value: ws.WebSocket,
  writable: true,
  enumerable: false,
  configurable: true,
});

/**
 * Sends the 101 head and opens the socket; resolves when it has closed
 * (the request, and with it the instance, is held until then).
 */
function openSocket(
  rid: number,
  socket: ServerSocket,
  headerList: Header[],
  protocol: string | null,
): Promise<void> {
  const closed = new Promise<void>((resolve) => {
    socket.addEventListener("close", () => resolve());
  });
  socket[ws._rid] = op_serve_upgrade(rid, headerList);
  socket[ws._readyState] = ws.WebSocket.OPEN;
  socket[ws._protocol] = protocol ?? "";
  dispatch(socket, new Event("open"));
  PromisePrototypeThen(
    (socket[ws._eventLoop] as () => Promise<void>)(),
    undefined,
    (error: unknown) => op_serve_unhandled(errorText(error)),
  );
  (socket[ws._serverHandleIdleTimeout] as () => void)();
  return closed;
}

/** The first argument of `handle` and friends at bake: return at once. */
const COMPILE_ONLY = Symbol("kiln compile only");

async function handle(
  handler: FetchHandler | typeof COMPILE_ONLY,
  env: Readonly<Record<string, string>>,
  next: NextRequest,
): Promise<void> {
  if (handler === COMPILE_ONLY) {
    return;
  }
  const [rid, method, url, headers, hasBody] = next;
  let ok = false;
  // `ctx.waitUntil` work runs after the response went out and keeps the
  // instance busy until it settles (the host bounds it by its timeout).
  const pending: Promise<unknown>[] = [];
  const ctx: Context = ObjectFreeze({
    waitUntil(promise: unknown): void {
      // Handled at once, so a rejection is reported here and only here.
      ArrayPrototypePush(
        pending,
        PromisePrototypeThen(PromiseResolve(promise), undefined, (error) => {
          op_serve_unhandled(errorText(error));
        }),
      );
    },
    passThroughOnException(): void {},
  });
  // Aborted when the client disconnects, as in Deno.serve.
  const abort = new AbortController();
  PromisePrototypeThen(
    op_serve_client_gone(rid),
    (gone: boolean) => {
      if (gone) abort.abort();
    },
    () => {},
  );
  try {
    const request = new Request(url, {
      method,
      headers,
      body: hasBody ? requestBody(rid) : null,
      signal: abort.signal,
      // @ts-ignore: streamed request bodies need duplex "half"
      duplex: "half",
    });
    const response = await handler.fetch(request, env, ctx);
    if (!ObjectPrototypeIsPrototypeOf(ResponsePrototype, response)) {
      throw new TypeError(
        "The default export's fetch() must return a Response (or a promise of one)",
      );
    }
    const headerList = [...response.headers] as Header[];
    const socket = WeakMapPrototypeGet(upgrades, response);
    if (socket !== undefined) {
      WeakMapPrototypeDelete(upgrades, response);
      ArrayPrototypePush(
        pending,
        openSocket(
          rid,
          socket,
          headerList,
          response.headers.get("sec-websocket-protocol"),
        ),
      );
      ok = true;
    } else {
      const body = response.body;
      op_serve_respond(rid, response.status, headerList, body !== null);
      ok = body === null || await writeBody(rid, body, abort);
    }
  } catch (error) {
    await op_serve_error(rid, errorText(error));
  } finally {
    op_serve_finish(rid, ok);
  }
  // Work added while earlier work settles counts too.
  for (let i = 0; i < pending.length; i++) {
    await pending[i];
  }
  op_serve_close(rid);
}

async function serveLoop(
  handler: FetchHandler | typeof COMPILE_ONLY,
): Promise<void> {
  if (handler === COMPILE_ONLY) {
    return;
  }
  // The function's variables, read once: they cannot change.
  const env = ObjectFreeze(
    op_kiln_env_to_object() as Record<string, string>,
  );
  while (true) {
    const next = (await op_serve_next()) as NextRequest | null;
    if (next === null) {
      return;
    }
    // Not awaited: the host decides how many requests an isolate has.
    PromisePrototypeThen(handle(handler, env, next), undefined, () => {});
  }
}

/**
 * Starts serving `ns.default.fetch`. Throws a TypeError at once if the
 * module has no such handler. From here on an error that escapes a handler
 * (unhandled rejection, a throw in a timer or microtask) is reported to the
 * host instead of ending the isolate, so it cannot fail another request.
 */
hostHooks.serve = function serve(
  ns: Record<string, unknown> | typeof COMPILE_ONLY,
): void {
  if (ns === COMPILE_ONLY) {
    return;
  }
  const handler = ns.default as FetchHandler | undefined;
  if (
    handler === null || typeof handler !== "object" ||
    typeof handler.fetch !== "function"
  ) {
    throw new TypeError(
      "the module has no default export with a fetch(request) method",
    );
  }
  core.setUnhandledPromiseRejectionHandler(
    (_promise: Promise<unknown>, reason: unknown): boolean => {
      op_serve_unhandled(errorText(reason));
      return true;
    },
  );
  core.setReportExceptionCallback((error: unknown): void => {
    op_serve_unhandled(errorText(error));
  });
  PromisePrototypeThen(serveLoop(handler), undefined, () => {});
};

/**
 * What the request path made at bake, kept: a request's signal follows its
 * controller's through a FinalizationRegistry, and V8 refuses to serialize
 * a heap where such a registry has cleanups pending.
 */
const compiledWith: unknown[] = [];

/**
 * Runs the request path once, when functions for `kiln serve` are baked
 * (`__kilnBakeBegin(true)`). V8 compiles a function the first time it is
 * called and a bake keeps compiled functions in the snapshot, so without
 * this every new instance parsed and compiled Request, Response, Headers,
 * URL, AbortSignal, streams and this file's functions on its first request
 * (about 1.5 ms; benches/RESULTS.md section 11). Not in kiln's own snapshot:
 * the bytecode would cost every `kiln run` about 0.2 ms to thaw. It does
 * what `handle` and a typical handler do, without ops: nothing stays
 * pending.
 */
hostHooks.compileRequestPath = function compileRequestPath(): void {
  (hostHooks.serve as (ns: typeof COMPILE_ONLY) => void)(COMPILE_ONLY);
  // No job is recorded yet, so this starts nothing.
  (hostHooks.startBakedJobs as (entry: string) => void)("");
  serveLoop(COMPILE_ONLY);
  handle(COMPILE_ONLY, {}, [0, "", "", [], false]);
  const abort = new AbortController();
  const request = new Request("http://localhost/compile?kiln=1", {
    method: "POST",
    headers: [["content-type", "text/plain"], ["x-kiln", "1"]],
    body: new ReadableStream({
      pull(controller) {
        controller.enqueue(new Uint8Array(1));
        controller.close();
      },
    }),
    signal: abort.signal,
    // @ts-ignore: streamed request bodies need duplex "half"
    duplex: "half",
  });
  ArrayPrototypePush(compiledWith, abort, request);
  new URL(request.url).searchParams.get("kiln");
  request.headers.get("content-type");
  void request.method;
  void request.signal;
  // Both kinds of response: a text body with one content type (deno_fetch's
  // fast static path) and one with other headers.
  for (
    const response of [
      new Response("compiled", {
        headers: { "content-type": "text/plain; charset=utf-8" },
      }),
      new Response(new Uint8Array(1), { status: 201, headers: [["x-a", "b"]] }),
    ]
  ) {
    ObjectPrototypeIsPrototypeOf(ResponsePrototype, response);
    [...response.headers];
    WeakMapPrototypeGet(upgrades, response);
    void response.status;
    response.headers.get("sec-websocket-protocol");
    const body = response.body;
    if (body !== null) {
      writeBody(COMPILE_ONLY, body, abort);
      const reader = body.getReader();
      PromisePrototypeThen(reader.read(), () => reader.cancel());
    }
  }
};
