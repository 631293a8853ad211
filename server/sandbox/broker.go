package sandbox

// Broker names a broker the sandbox imitates. Its string form is the
// lower-case name used in the control API ("upstox", "fyers") and the path
// prefix of that broker's routes. The sandbox is a fake broker built from
// the brokers' wire formats alone: it imports no gateway package, so a
// mistake in an adapter cannot be shared by the fake that tests it.
type Broker string

// The brokers the sandbox imitates.
const (
	Upstox Broker = "upstox"
	Fyers  Broker = "fyers"
)

// Brokers lists every broker the sandbox imitates, in a stable order.
var Brokers = []Broker{Upstox, Fyers}

// Valid reports whether b is a broker the sandbox imitates.
func (b Broker) Valid() bool { return b == Upstox || b == Fyers }
