// Deno.cron on kiln: a job every minute (cron's finest grain), stopped by an
// AbortController after two runs. With KILN_CRON_TEST_SCHEDULE_OFFSET=2000
// every next run is two seconds away instead, for a quick demo:
//
//   KILN_CRON_TEST_SCHEDULE_OFFSET=2000 cargo run --release -- run examples/cron.ts

const controller = new AbortController();
let runs = 0;

const finished: Promise<void> = Deno.cron(
  "heartbeat",
  "* * * * *",
  { backoffSchedule: [1000, 5000], signal: controller.signal },
  () => {
    runs++;
    console.log(`heartbeat #${runs} at ${new Date().toISOString()}`);
    if (runs === 2) {
      controller.abort();
    }
  },
);

console.log("waiting for the next run (every minute, UTC)...");
await finished;
console.log(`stopped after ${runs} runs`);
