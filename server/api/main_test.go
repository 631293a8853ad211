package api_test

import (
	"flag"
	"net/http"
	"testing"

	"go.uber.org/goleak"
)

// soak runs TestSoak (25 s): go test ./server/api -run TestSoak -soak.
var soak = flag.Bool("soak", false, "run the 25-second soak test (FEEDGATE_SOAK=1 runs it for 3 minutes)")

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// closeIdle drops the default transport's idle connections, whose
// goroutines would otherwise outlive a test.
func closeIdle() {
	if tr, ok := http.DefaultTransport.(*http.Transport); ok {
		tr.CloseIdleConnections()
	}
}
