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

// Watch returns a Watcher for userID's connections, or a *LimitError when
// the user already has MaxWatchers open. Call Close when done.
func (m *Manager) Watch(userID string) (*Watcher, error) {
	c := make(chan struct{}, 1)
	w := &Watcher{C: c, c: c, userID: userID, m: m, done: make(chan struct{})}
	m.mu.Lock()
	defer m.mu.Unlock()
	select {
	case <-m.stop:
		w.close()
		return w, nil
	default:
	}
	if m.watchers[userID] >= m.cfg.MaxWatchers {
		return nil, &LimitError{What: "status watchers", Max: m.cfg.MaxWatchers, Setting: "--max-watchers-per-user"}
	}
	m.watch[w] = struct{}{}
	m.watchers[userID]++
	return w, nil
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

// Close stops the watcher. It is idempotent.
func (w *Watcher) Close() {
	w.m.mu.Lock()
	if _, ok := w.m.watch[w]; ok {
		delete(w.m.watch, w)
		if w.m.watchers[w.userID]--; w.m.watchers[w.userID] <= 0 {
			delete(w.m.watchers, w.userID)
		}
	}
	w.m.mu.Unlock()
	w.close()
}
