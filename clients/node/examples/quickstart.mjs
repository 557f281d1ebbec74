// Quickstart: node examples/quickstart.mjs   (after `npm run build`; the sidecar's socket
// comes from $MADSIDECAR_SOCKET, else /run/madsidecar/madsidecar.sock).
// In an application, import from "@madsidecar/client" instead of the relative path.
import { Client, NotHeldError, isCacheHit } from "../dist/index.js";

const client = await Client.connect({ timeoutMs: 5000 });
client.on("connection.lost", ({ error }) => {
  // Locks, leases, presence and subscriptions died with the connection: nothing is re-taken.
  console.error("connection lost:", error.message);
});
client.on("lock.lost", ({ name }) => console.error(`lock ${name} lost: stop using it`));

const suffix = `${process.pid}-${Date.now()}`;
console.log("ping:", await client.ping(), "node:", client.serverInfo?.node_id);

// Cache: set/get, and fetch/fill (one caller fleet-wide computes a missing value).
await client.cacheSet({ key: `greeting:${suffix}`, value: { text: "hello" }, ttl_ms: 60_000 });
console.log("cache.get:", (await client.cacheGet({ key: `greeting:${suffix}` }))?.value);
const fetched = await client.cacheFetch({ key: `report:${suffix}` });
if (!isCacheHit(fetched)) {
  try {
    await client.cacheFill({ key: `report:${suffix}`, lease: fetched.lease, value: [1, 2, 3] });
  } catch (error) {
    if (!(error instanceof NotHeldError)) throw error; // a write voided our lease
  }
}

// A lock with a fencing token (a bigint only past 2**53).
const lock = await client.lockAcquire({ name: `migrations:${suffix}`, ttl_ms: 10_000, wait_ms: 2000 });
if (lock.acquired) {
  console.log("lock fence:", lock.fence);
  await client.lockRelease({ name: `migrations:${suffix}`, token: lock.token });
}

// Sessions, rate limits.
const session = await client.sessionCreate({ user_id: `u-${suffix}`, data: { role: "admin" } });
console.log("session user:", (await client.sessionGet({ token: session.token }))?.user_id);
const hit = await client.ratelimitHit({ key: `ip:${suffix}`, limit: 100, window_ms: 60_000 });
console.log("rate limit:", hit.allowed, hit.remaining);

// Pub/sub: notifications are events (or `for await (const n of client.notifications())`).
const channel = `news:${suffix}`;
await client.pubsubSubscribe({ channel });
const received = new Promise((resolve) => client.once("pubsub.message", resolve));
await client.pubsubPublish({ channel, message: "hi" });
console.log("pubsub.message:", (await received).message);

await client.close();
console.log("ok");
