// The reference library (mongodash) under the same scenarios as benchmarks/engine.py.
// Usage: node bench.mjs <uri> <db> <mode throughput|latency> <docs> <concurrency>
// Prints one JSON line. Installed by benchmarks/engine.py into benchmarks/.reference.
import { createRequire } from "node:module";
const require = createRequire(import.meta.url);
const mongodash = require("mongodash");
const { MongoClient } = require("mongodb");

const [uri, dbName, mode, docsArg, concurrencyArg] = process.argv.slice(2);
const docs = Number(docsArg);
const concurrency = Number(concurrencyArg);
const client = new MongoClient(uri, { monitorCommands: true });
const commands = {};
let counting = false;
client.on("commandStarted", (event) => {
  if (!counting) return;
  const target = event.command[event.commandName];
  const key = `${event.commandName}:${typeof target === "string" ? target : ""}`;
  commands[key] = (commands[key] || 0) + 1;
});
const observer = new MongoClient(uri);
await client.connect();
await observer.connect();
const db = observer.db(dbName);
const latencies = [];
await mongodash.init({
  mongoClient: client, reactiveTaskConcurrency: concurrency,
  onError: () => {}, onInfo: () => {}, monitoring: { enabled: false },
});
await mongodash.reactiveTask({
  task: "bench", collection: "items", debounce: 0,
  handler: async (context) => {
    if (mode === "latency") {
      const written = context.watchedValues.writtenAt;
      latencies.push(Date.now() - written);
    }
  },
});
await mongodash.startReactiveTasks();
await new Promise((resolve) => setTimeout(resolve, 1000)); // leader elected, stream open
const cpuBefore = process.cpuUsage();
counting = true;
const started = Date.now();
if (mode === "throughput") {
  for (let i = 0; i < docs; i += 100) {
    await db.collection("items").insertMany(
      Array.from({ length: Math.min(100, docs - i) }, (_, k) => ({ n: i + k })));
  }
} else {
  for (let i = 0; i < docs; i += 1) {
    await db.collection("items").insertOne({ n: i, writtenAt: Date.now() });
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
while ((await db.collection("items_tasks").countDocuments({ status: "completed" })) < docs) {
  if (Date.now() - started > 600000) { break; }
  await new Promise((resolve) => setTimeout(resolve, 50));
}
const seconds = (Date.now() - started) / 1000;
counting = false;
const cpu = process.cpuUsage(cpuBefore);
const completed = await db.collection("items_tasks").countDocuments({ status: "completed" });
await mongodash.stopReactiveTasks();
await client.close();
await observer.close();
const line = JSON.stringify({
  library: "mongodash", mode, docs, completed, concurrency, seconds,
  tasksPerSecond: completed / seconds,
  cpuSecondsPerTask: (cpu.user + cpu.system) / 1e6 / Math.max(completed, 1),
  commands, latenciesMs: latencies,
});
// Exit only once the line is flushed: process.exit() can cut piped output short.
process.stdout.write(line + "\n", () => process.exit(0));
