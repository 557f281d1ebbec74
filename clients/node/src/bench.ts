/**
 * The SDK bench: sequential `ping` round trips (p50/p99 in µs), then pipelined throughput
 * (`ping`s on one connection, at most 256 in flight). Connects to `$MADSIDECAR_SOCKET`.
 * Prints exactly one JSON line:
 *   {"sdk": "node", "ping_p50_us": ..., "ping_p99_us": ..., "pipelined_per_s": ...}
 *
 *   node dist/bench.js [--pings 20000] [--pipelined 100000]
 */

import { Client } from "./index.js";

const WARMUP = 1000;
const MAX_IN_FLIGHT = 256;

function flag(name: string, fallback: number): number {
  const i = process.argv.indexOf(name);
  if (i < 0) return fallback;
  const value = Number(process.argv[i + 1]);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${name} takes a positive integer, not ${process.argv[i + 1]}`);
  }
  return value;
}

function percentile(sorted: Float64Array, p: number): number {
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[index] ?? 0;
}

async function pipelined(client: Client, total: number): Promise<number> {
  const start = process.hrtime.bigint();
  await new Promise<void>((resolve, reject) => {
    let sent = 0;
    let done = 0;
    const pump = (): void => {
      while (sent - done < MAX_IN_FLIGHT && sent < total) {
        sent++;
        client.ping().then(() => {
          done++;
          if (done === total) resolve();
          else pump();
        }, reject);
      }
    };
    pump();
  });
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  return total / seconds;
}

async function main(): Promise<void> {
  const pings = flag("--pings", 20_000);
  const pipelinedCount = flag("--pipelined", 100_000);
  const client = await Client.connect({ timeoutMs: 60_000 });
  try {
    for (let i = 0; i < WARMUP; i++) await client.ping();
    const samples = new Float64Array(pings);
    for (let i = 0; i < pings; i++) {
      const t0 = process.hrtime.bigint();
      await client.ping();
      samples[i] = Number(process.hrtime.bigint() - t0) / 1000;
    }
    samples.sort();
    const perSecond = await pipelined(client, pipelinedCount);
    process.stdout.write(
      JSON.stringify({
        sdk: "node",
        ping_p50_us: Math.round(percentile(samples, 50) * 10) / 10,
        ping_p99_us: Math.round(percentile(samples, 99) * 10) / 10,
        pipelined_per_s: Math.round(perSecond),
      }) + "\n",
    );
  } finally {
    await client.close();
  }
}

main().catch((error: unknown) => {
  process.stderr.write(`bench failed: ${error instanceof Error ? error.message : String(error)}\n`);
  process.exit(1);
});
