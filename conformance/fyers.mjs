// placeholder until the Fyers checks land
import { check, done } from "./lib.mjs";
await check("sdk loads", async () => { await import("fyers-api-v3"); });
done();
