package clock

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestFakeRunsDueTimersInOrder(t *testing.T) {
	t.Parallel()
	c := NewFake(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	var order []int
	c.AfterFunc(2*time.Second, func() { order = append(order, 2) })
	c.AfterFunc(time.Second, func() { order = append(order, 1) })
	stopped := c.AfterFunc(time.Second, func() { order = append(order, 99) })
	if !stopped.Stop() {
		t.Error("Stop of a pending timer = false")
	}
	var late atomic.Bool
	c.AfterFunc(time.Hour, func() { late.Store(true) })
	c.Advance(3 * time.Second)
	if len(order) != 2 || order[0] != 1 || order[1] != 2 {
		t.Errorf("order = %v", order)
	}
	if late.Load() || c.Pending() != 1 {
		t.Errorf("the one-hour timer ran early (pending %d)", c.Pending())
	}
	if got := c.Now(); !got.Equal(time.Date(2026, 1, 1, 0, 0, 3, 0, time.UTC)) {
		t.Errorf("Now = %v", got)
	}
}
