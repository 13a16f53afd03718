// kiln_cron glue: `Deno.cron`, compatible with Deno's. Argument checks that
// belong to JS live here; names, schedules and backoff limits are checked by
// the ops so every backend gets them.

import { core, primordials } from "ext:core/mod.js";
import { op_cron_create, op_cron_next, op_cron_validate } from "ext:core/ops";
import {
  bakingEntrySpecifier,
  defineDenoMember,
  hostHooks,
  internals,
} from "ext:kiln_runtime/runtime.ts";

const {
  ArrayIsArray,
  ArrayPrototypeEvery,
  ArrayPrototypeJoin,
  ArrayPrototypePush,
  ArrayPrototypeSome,
  Promise,
  NumberIsInteger,
  TypeError,
} = primordials;

type CronField = number | { exact: number | number[] } | {
  start?: number;
  end?: number;
  every?: number;
};

interface CronScheduleObject {
  minute?: CronField;
  hour?: CronField;
  dayOfMonth?: CronField;
  month?: CronField;
  dayOfWeek?: CronField;
}

interface CronOptions {
  backoffSchedule?: number[];
  signal?: AbortSignal;
}

type Handler = () => unknown;

function invalidSchedule(): TypeError {
  return new TypeError("Invalid cron schedule");
}

/** Converts one field of a schedule object to cron syntax. */
function formatToCronSchedule(value?: CronField): string {
  if (value === undefined) {
    return "*";
  }
  if (typeof value === "number") {
    return `${value}`;
  }
  if (value === null || typeof value !== "object") {
    throw invalidSchedule();
  }
  if ("exact" in value && value.exact !== undefined) {
    const exact = value.exact;
    if (typeof exact === "number") {
      return `${exact}`;
    }
    if (ArrayIsArray(exact) && exact.length > 0) {
      return ArrayPrototypeJoin(exact, ",");
    }
    throw invalidSchedule();
  }
  const { start, end, every } = value as {
    start?: number;
    end?: number;
    every?: number;
  };
  if (start !== undefined && end !== undefined && every !== undefined) {
    return `${start}-${end}/${every}`;
  }
  if (start !== undefined && end !== undefined) {
    return `${start}-${end}`;
  }
  if (start !== undefined && every !== undefined) {
    return `${start}/${every}`;
  }
  if (start !== undefined) {
    return `${start}/1`;
  }
  if (end === undefined && every !== undefined) {
    return `*/${every}`;
  }
  throw invalidSchedule();
}

/**
 * A schedule string or object as a five-field cron string, filling in
 * missing fields exactly as Deno does (see the comment below).
 */
function parseScheduleToString(schedule: string | CronScheduleObject): string {
  if (typeof schedule === "string") {
    return schedule;
  }
  if (schedule === null || typeof schedule !== "object") {
    throw invalidSchedule();
  }
  let { minute, hour, dayOfMonth, month, dayOfWeek } = schedule;
  // Deno's rule, decided by the smallest given field: without a minute, an
  // hour means minute 0; a day (of month or week) means 00:00; a month alone
  // means 00:00 on the 1st. Every other missing field stays `*`.
  if (minute !== undefined) {
    // Nothing to fill in.
  } else if (hour !== undefined) {
    minute = 0;
  } else if (dayOfMonth !== undefined || dayOfWeek !== undefined) {
    minute = 0;
    hour = 0;
  } else if (month !== undefined) {
    minute = 0;
    hour = 0;
    dayOfMonth = 1;
  }
  return `${formatToCronSchedule(minute)} ${formatToCronSchedule(hour)} ${
    formatToCronSchedule(dayOfMonth)
  } ${formatToCronSchedule(month)} ${formatToCronSchedule(dayOfWeek)}`;
}

function cron(
  name: string,
  schedule: string | CronScheduleObject,
  handlerOrOptions1: Handler | CronOptions,
  handler2?: Handler,
): Promise<void> {
  if (name === undefined) {
    throw new TypeError(
      "Cannot create cron job, a unique name is required: received 'undefined'",
    );
  }
  if (schedule === undefined) {
    throw new TypeError(
      "Cannot create cron job, a schedule is required: received 'undefined'",
    );
  }
  const scheduleString = parseScheduleToString(schedule);

  let handler: Handler;
  let options: CronOptions | undefined;
  if (typeof handlerOrOptions1 === "function") {
    if (handler2 !== undefined) {
      throw new TypeError(
        "Cannot create cron job, a single handler is required: two handlers were specified",
      );
    }
    handler = handlerOrOptions1;
  } else if (typeof handler2 === "function") {
    handler = handler2;
    options = handlerOrOptions1;
  } else {
    throw new TypeError("Cannot create cron job: a handler is required");
  }

  const backoffSchedule = options?.backoffSchedule;
  if (
    backoffSchedule !== undefined &&
    (!ArrayIsArray(backoffSchedule) ||
      !ArrayPrototypeEvery(
        backoffSchedule,
        (ms: unknown) => typeof ms === "number" && NumberIsInteger(ms) && ms >= 0,
      ))
  ) {
    throw new TypeError("Invalid backoff schedule");
  }

  const entry = bakingEntrySpecifier();
  if (entry !== undefined) {
    return recordForLaunch(entry, `${name}`, scheduleString, backoffSchedule, handler, options?.signal);
  }
  return start(`${name}`, scheduleString, backoffSchedule, handler, options?.signal);
}

/** A job declared while user code was baked; it starts at launch. */
interface RecordedJob {
  entry: string;
  name: string;
  schedule: string;
  backoffSchedule: number[] | undefined;
  handler: Handler;
  signal: AbortSignal | undefined;
  resolve: () => void;
  reject: (error: unknown) => void;
}

const recordedJobs: RecordedJob[] = [];

/**
 * Checks a job declared during a bake as `start` would, and keeps it in the
 * heap: a snapshot cannot hold its resource or its pending op. A runtime
 * thawed to run `entry` starts it (`hostHooks.startBakedJobs`); the promise
 * `Deno.cron` returned settles as the started job's does.
 */
function recordForLaunch(
  entry: string,
  name: string,
  schedule: string,
  backoffSchedule: number[] | undefined,
  handler: Handler,
  signal: AbortSignal | undefined,
): Promise<void> {
  op_cron_validate(name, schedule, backoffSchedule);
  if (
    ArrayPrototypeSome(
      recordedJobs,
      (job: RecordedJob) => job.entry === entry && job.name === name,
    )
  ) {
    throw new TypeError("Cron with this name already exists");
  }
  return new Promise<void>((resolve, reject) => {
    ArrayPrototypePush(recordedJobs, {
      entry,
      name,
      schedule,
      backoffSchedule,
      handler,
      signal,
      resolve,
      reject,
    });
  });
}

/** Starts the jobs baked with `entry` (once per runtime, after thawing). */
hostHooks.startBakedJobs = (entry: string): void => {
  for (const job of recordedJobs) {
    if (job.entry === entry) {
      start(job.name, job.schedule, job.backoffSchedule, job.handler, job.signal)
        .then(job.resolve, job.reject);
    }
  }
};

function start(
  name: string,
  schedule: string,
  backoffSchedule: number[] | undefined,
  handler: Handler,
  signal: AbortSignal | undefined,
): Promise<void> {
  const rid = op_cron_create(name, schedule, backoffSchedule);

  if (signal) {
    const close = () => {
      try {
        core.close(rid);
      } catch {
        // Already closed.
      }
    };
    if (signal.aborted) {
      close();
    } else {
      signal.addEventListener("abort", close, { once: true });
    }
  }

  return (async () => {
    let success = true;
    while (true) {
      const run = await op_cron_next(rid, success);
      if (run === false) {
        break;
      }
      try {
        await handler();
        success = true;
      } catch (error) {
        console.error(`Exception in cron handler ${name}`, error);
        success = false;
      }
    }
  })();
}

internals.formatToCronSchedule = formatToCronSchedule;
internals.parseScheduleToString = parseScheduleToString;
defineDenoMember("cron", cron);
