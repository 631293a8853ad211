//go:build unix

package connguard

import "syscall"

// DefaultMaxConns is three quarters of the process's descriptor limit
// (the Go runtime raises the soft limit to the hard one at start), leaving
// the rest for the database, broker sockets and the in-process sandbox.
func DefaultMaxConns() int {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == 0 {
		return 1024
	}
	n := rl.Cur / 4 * 3
	if n > 1<<20 { // unlimited, or as good as
		n = 1 << 20
	}
	return max(64, int(n))
}
