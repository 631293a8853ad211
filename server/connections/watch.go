package connections

import (
	"sync"
)

// Watcher receives a signal on C after every change of one user's
// connections. Signals coalesce: a slow reader sees one signal for many
// changes and reads the current state with Status, so it never falls
// behind and never misses the latest state.
type Watcher struct {
	C      <-chan struct{}
	c      chan struct{}
	userID string
	m      *Manager

	mu      sync.Mutex
	changed []Change
	done    chan struct{}
	once    sync.Once
}

// Watch returns a Watcher for userID's connections. Call Close when done.
func (m *Manager) Watch(userID string) *Watcher {
	c := make(chan struct{}, 1)
	w := &Watcher{C: c, c: c, userID: userID, m: m, done: make(chan struct{})}
	m.mu.Lock()
	select {
	case <-m.stop:
		w.close()
	default:
		m.watch[w] = struct{}{}
	}
	m.mu.Unlock()
	return w
}

// Done is closed when the manager shuts down.
func (w *Watcher) Done() <-chan struct{} { return w.done }

// Changes returns and clears the changes since the last call (at most the
// latest per connection).
func (w *Watcher) Changes() []Change {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := w.changed
	w.changed = nil
	return out
}

func (w *Watcher) notify(ch Change) {
	w.mu.Lock()
	replaced := false
	for i := range w.changed {
		if w.changed[i].Key == ch.Key {
			w.changed[i] = ch
			replaced = true
		}
	}
	if !replaced {
		w.changed = append(w.changed, ch)
	}
	w.mu.Unlock()
	select {
	case w.c <- struct{}{}:
	default:
	}
}

func (w *Watcher) close() { w.once.Do(func() { close(w.done) }) }

// Close stops the watcher.
func (w *Watcher) Close() {
	w.m.mu.Lock()
	delete(w.m.watch, w)
	w.m.mu.Unlock()
	w.close()
}
