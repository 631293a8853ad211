//go:build !unix

package connguard

// DefaultMaxConns is a fixed limit where the descriptor limit is unknown.
func DefaultMaxConns() int { return 4096 }
