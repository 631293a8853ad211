// Package conformance holds the test that drives the brokers' official
// client SDKs (upstox-js-sdk and fyers-api-v3 from npm, pinned in
// package-lock.json) against feedgate's sandbox broker, unchanged, with only
// their base URLs pointed at it. The sandbox and feedgate's adapters were
// written by one team from the same notes; the SDKs were written by the
// brokers, so where they disagree with the sandbox, the SDK wins.
package conformance
