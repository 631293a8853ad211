package connguard_test

import (
	"syscall"
	"testing"

	"github.com/feedgate/feedgate/server/connguard"
)

// The default connection cap stays below the process's descriptor limit,
// leaving room for the database, broker sockets and the sandbox.
func TestDefaultMaxConnsIsBelowTheDescriptorLimit(t *testing.T) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil {
		t.Skip(err)
	}
	n := connguard.DefaultMaxConns()
	if uint64(n) >= rl.Cur || n < 64 {
		t.Errorf("DefaultMaxConns() = %d with a descriptor limit of %d", n, rl.Cur)
	}
	if g := connguard.New(connguard.Config{}); g.MaxConns() != n {
		t.Errorf("New takes %d, want the default %d", g.MaxConns(), n)
	}
	t.Logf("descriptor limit %d: at most %d client connections", rl.Cur, n)
}
