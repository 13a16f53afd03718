// A function with a cron job: registered when the host loads the function,
// run in its isolate every minute. GET /ticker reports the runs so far.
let runs = 0;
let last: string | null = null;

Deno.cron("ticker", "* * * * *", () => {
  runs++;
  last = new Date().toISOString();
});

export default {
  fetch(): Response {
    return Response.json({ runs, last });
  },
};
