package revocation

import (
	"context"
	"sync"
	"time"

	"go.uber.org/zap"
)

// What a replica does while the store (Redis) cannot be reached is a
// deliberate choice: checks go on with what the replica knows — its own
// revocations and everything it had received — and are neither refused
// nor made to wait; a revocation made meanwhile stands on this replica at
// once and is kept in the outbox, published again every shareRetry until
// the store takes it, and published once more after every reconnection
// (with the revocations of the last republishWindow), because a Redis
// failover may lose what the old master had acknowledged but not yet
// replicated. On reconnecting, a replica also reloads the whole list, so
// what others published meanwhile reaches it. The outbox is bounded
// (maxOutbox): only logouts and verified back-channel logouts fill it.
const (
	shareRetry       = 2 * time.Second
	republishWindow  = 5 * time.Minute
	maxOutbox        = 100_000
	subscribeBackoff = 2 * time.Second
)

// outbox is this replica's recent revocations: those not yet published
// (sent == 0) and those published within republishWindow.
type outbox struct {
	mu      sync.Mutex
	entries []outEntry // oldest first
	unsent  int
	dropped int64 // unsent entries dropped because the outbox was full
}

type outEntry struct {
	e    Entry
	sent int64 // unix seconds it was published; 0: not yet
}

// add records e, published at sent (0: not published).
func (o *outbox) add(e Entry, sent int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.entries) >= maxOutbox {
		if o.entries[0].sent == 0 {
			o.unsent--
			o.dropped++
		}
		o.entries = o.entries[1:]
	}
	o.entries = append(o.entries, outEntry{e: e, sent: sent})
	if sent == 0 {
		o.unsent++
	}
}

// due lists the entries to publish: the unsent ones, and with recent also
// those published since cut. It forgets entries published before cut.
func (o *outbox) due(recent bool, cut int64) []Entry {
	o.mu.Lock()
	defer o.mu.Unlock()
	kept := o.entries[:0]
	var out []Entry
	for _, x := range o.entries {
		if x.sent != 0 && x.sent < cut {
			continue
		}
		kept = append(kept, x)
		if x.sent == 0 || recent {
			out = append(out, x.e)
		}
	}
	clear(o.entries[len(kept):])
	o.entries = kept
	return out
}

// sent marks e as published at now.
func (o *outbox) sent(e Entry, now int64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for i := range o.entries {
		if x := &o.entries[i]; x.e == e {
			if x.sent == 0 {
				o.unsent--
			}
			x.sent = now
		}
	}
}

// Unshared is the number of this replica's revocations the store has not
// taken yet (0 without a store).
func (l *List) Unshared() int {
	l.out.mu.Lock()
	defer l.out.mu.Unlock()
	return l.out.unsent
}

// share publishes the outbox's unsent entries and, with recent, those
// published within republishWindow; it stops at the first failure.
func (l *List) share(ctx context.Context, recent bool) {
	now := l.now().Unix()
	due := l.out.due(recent, now-int64(republishWindow/time.Second))
	if len(due) == 0 {
		return
	}
	n := 0
	for _, e := range due {
		if err := l.store.Publish(ctx, e.Kind, e.Value, time.Unix(e.At, 0)); err != nil {
			if n > 0 || recent {
				l.log.Warn("revocations not shared yet: store unavailable", zap.Int("published", n), zap.Int("waiting", len(due)-n), zap.Error(err))
			}
			return
		}
		l.out.sent(e, l.now().Unix())
		n++
	}
	l.log.Info("revocations shared with the other replicas", zap.Int("published", n), zap.Bool("after_reconnection", recent))
}

// subscribe keeps the subscription to the other replicas' revocations up
// until ctx ends, resubscribing after subscribeBackoff when it is lost; it
// signals up each time it is (re)established.
func (l *List) subscribe(ctx context.Context, up chan<- struct{}) {
	for ctx.Err() == nil {
		ready := func() {
			select {
			case up <- struct{}{}:
			default:
			}
		}
		if err := l.store.Subscribe(ctx, ready, l.add); err != nil && ctx.Err() == nil {
			l.log.Warn("revocation subscription lost; retrying", zap.Error(err))
		}
		select {
		case <-ctx.Done():
		case <-time.After(subscribeBackoff):
		}
	}
}
