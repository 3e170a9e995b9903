// One instance of the reference library (mongodash), driven by benchmarks/engine.py.
// Usage: node bench.mjs <uri with the run's database> <concurrency> <mode> [timings JSON]
// timings: mongoreact's TIMINGS (benchmarks/drivers.py), given to the reference through
// its scheduler's internal options (what its configureForTesting uses), so both run with
// equal polling, batching and lease timings; omitted, the reference runs its defaults.
// mode: "throughput", "latency" (handler start delays) or "memory" (a filter nothing
// matches: the run only reconciles; the result has the peak RSS).
// The Python side writes the documents and times the run, as it does for mongoreact;
// this process runs a handler that reads its document (as real handlers do) and reports
// over stdout, one JSON object a line:
//   {"event":"started"}                 once the library runs
//   {"event":"ran","runs":N}            handler runs so far (at most every 20 ms)
//   {"event":"result",...}              after "stop": commands, CPU, latencies
// stdin takes "count" (start counting commands and CPU) and "stop".
// Installed by benchmarks/engine.py into benchmarks/.reference (ignored by git).
import { createRequire } from "node:module";
import { createInterface } from "node:readline";
const require = createRequire(import.meta.url);
const mongodash = require("mongodash");
const { MongoClient } = require("mongodb");

const [uri, concurrencyArg, mode, timingsArg] = process.argv.slice(2);
const concurrency = Number(concurrencyArg);
const measureLatency = mode === "latency";
const rssBeforeKb = process.resourceUsage().maxRSS;
const say = (message) => process.stdout.write(JSON.stringify(message) + "\n");

const client = new MongoClient(uri, { monitorCommands: true });
const commands = {};
let counting = false;
let cpuBefore = process.cpuUsage();
client.on("commandStarted", (event) => {
  if (!counting) return;
  const target = event.command[event.commandName];
  const key = `${event.commandName}:${typeof target === "string" ? target : ""}`;
  commands[key] = (commands[key] || 0) + 1;
});
await client.connect();

let runs = 0;
let reported = 0;
const latencies = [];
setInterval(() => {
  if (runs !== reported) {
    reported = runs;
    say({ event: "ran", runs });
  }
}, 20);

await mongodash.init({
  mongoClient: client, reactiveTaskConcurrency: concurrency,
  onError: () => {}, onInfo: () => {}, monitoring: { enabled: false },
});
if (timingsArg) {
  const t = JSON.parse(timingsArg);
  mongodash._scheduler.updateInternalOptions({
    minPollMs: t.poll_min, maxPollMs: t.poll_max, minBatchIntervalMs: t.batch_window,
    batchIntervalMs: t.batch_max_wait, lockHeartbeatMs: t.leader_heartbeat,
    lockTtlMs: t.leader_ttl,
  });
}
await mongodash.reactiveTask({
  task: "bench", collection: "items", debounce: 0,
  ...(mode === "memory" ? { filter: { n: -1 } } : {}),
  handler: async (context) => {
    if (measureLatency) latencies.push(Date.now() - context.watchedValues.writtenAt);
    await context.getDocument();
    runs += 1;
  },
});
await mongodash.startReactiveTasks();
say({ event: "started" });

for await (const line of createInterface({ input: process.stdin })) {
  if (line === "count") {
    counting = true;
    cpuBefore = process.cpuUsage();
    say({ event: "counting" });
  } else if (line === "stop") {
    counting = false;
    const cpu = process.cpuUsage(cpuBefore);
    await mongodash.stopReactiveTasks();
    await client.close();
    const result = {
      event: "result", runs, commands, latenciesMs: latencies,
      cpuSeconds: (cpu.user + cpu.system) / 1e6,
      peakRssKb: process.resourceUsage().maxRSS, rssBeforeStartKb: rssBeforeKb,
    };
    // Exit only once the line is flushed: process.exit() can cut piped output short.
    process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(0));
  }
}
