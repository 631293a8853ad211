// placeholder until the Upstox checks land
import { check, done } from "./lib.mjs";
await check("sdk loads", async () => { await import("upstox-js-sdk"); });
done();
