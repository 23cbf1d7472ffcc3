// Package revocation owns the list of ended sessions. Sessions are sealed
// cookies with no server state, so ending one before it expires — logout,
// OpenID Connect back-channel logout, a token revoked at the provider —
// means remembering it until it would have expired anyway.
//
// Entries name a session id (one browser session), a provider session id
// (sid: every session of one provider login), a subject (sub: every
// session of a user created before the revocation) or a token (the SHA-256
// of one the service obtained for a session, kept until the token
// expires). The provider's tokens presented as bearer tokens are judged by
// the same entries (TokenRevoked): the session they were obtained for (the
// login's nonce names it), their sid, their sub and iat, their digest. The
// list lives in memory and is consulted on every check without any I/O. With Redis
// (REDIS_URL) every replica publishes its revocations and subscribes to the
// others', with a periodic full resync; Redis being down never fails a
// check — each replica then knows only its own revocations, and publishes
// them once Redis answers again (share.go).
package revocation

import (
	"context"
	"encoding/base64"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
)

// Kind names what an entry revokes.
type Kind byte

// Kinds of entries.
const (
	Session Kind = 'i' // the service's own session id
	SID     Kind = 's' // the provider's session id
	Subject Kind = 'u' // every session of the subject created before the revocation
	Token   Kind = 't' // one token, by the base64url SHA-256 of it; At is its expiry less the retention
)

// MinRetention is the shortest time entries are kept: the provider's tokens
// obtained for a session stay valid for their own lifetime, which may be
// longer than the session's (Dex: 24 hours), and a logout must outlast
// them. Tokens issued longer ago than the retention are refused on the
// bearer path anyway (credential.Tokens), so nothing revoked comes back.
const MinRetention = 24 * time.Hour

// Retention is how long a list keeps its entries for sessions that live at
// most sessionMaxAge: the longer of the two.
func Retention(sessionMaxAge time.Duration) time.Duration { return max(sessionMaxAge, MinRetention) }

// Store shares revocations between replicas.
type Store interface {
	Publish(ctx context.Context, k Kind, value string, at time.Time) error
	// Load returns every entry younger than since.
	Load(ctx context.Context, since time.Time) ([]Entry, error)
	// Subscribe calls ready once the subscription is established, then fn
	// for entries published by any replica, until ctx ends (nil) or the
	// subscription is lost (an error).
	Subscribe(ctx context.Context, ready func(), fn func(Entry)) error
	// Remember records a one-time value (a logout token's jti) and reports
	// whether it was new.
	Remember(ctx context.Context, key string, ttl time.Duration) (bool, error)
}

// Entry is one revocation.
type Entry struct {
	Kind  Kind
	Value string
	At    int64 // unix seconds
}

// List is the in-memory revocation list. Safe for concurrent use.
type List struct {
	ttl   time.Duration
	now   func() time.Time
	log   *zap.Logger
	store Store // nil: this replica only

	n    atomic.Int64 // entries held; 0 lets Revoked skip the lock
	mu   sync.RWMutex // guards the maps
	maps map[Kind]map[string]int64

	out outbox // this replica's revocations until the store has them (share.go)

	onceMu        sync.Mutex // guards once, warnedAt and warnedEvicted
	once          *once      // the replay memory
	warnedAt      int64      // when the replay memory last said it was full, unix seconds
	warnedEvicted int64      // how many values it had dropped early by then
}

// New returns a list that keeps entries for ttl (Retention: at least the
// longest a session can live). store may be nil.
func New(ttl time.Duration, store Store, now func() time.Time, log *zap.Logger) *List {
	return &List{ttl: ttl, now: now, log: log.Named("revocation"), store: store,
		maps: map[Kind]map[string]int64{Session: {}, SID: {}, Subject: {}, Token: {}}, once: newOnce(MaxOnce)}
}

// TTL is how long entries are kept.
func (l *List) TTL() time.Duration { return l.ttl }

// Shared reports whether revocations reach other replicas.
func (l *List) Shared() bool { return l.store != nil }

// Revoked reports whether a session with this id, provider sid and subject,
// created at created (unix seconds), has been ended.
func (l *List) Revoked(id, sid, sub string, created int64) bool {
	if l.n.Load() == 0 {
		return false
	}
	l.mu.RLock()
	defer l.mu.RUnlock()
	if _, ok := l.maps[Session][id]; ok && id != "" {
		return true
	}
	if _, ok := l.maps[SID][sid]; ok && sid != "" {
		return true
	}
	if at, ok := l.maps[Subject][sub]; ok && sub != "" && created <= at {
		return true
	}
	return false
}

// Revoke ends sessions locally and, with a store, on every replica. A store
// failure is logged and returned; the local entry stands regardless.
func (l *List) Revoke(ctx context.Context, k Kind, value string) error {
	return l.revoke(ctx, k, value, l.now().Unix())
}

// RevokeToken ends one token (by its SHA-256) until it expires at exp
// (unix seconds), on every replica that shares the list.
func (l *List) RevokeToken(ctx context.Context, digest [32]byte, exp int64) error {
	now := l.now().Unix()
	if exp <= now {
		return nil
	}
	// Kept until exp: the entry is dated so that it expires with the token.
	return l.revoke(ctx, Token, base64.RawURLEncoding.EncodeToString(digest[:]), min(now, exp-int64(l.ttl/time.Second)))
}

func (l *List) revoke(ctx context.Context, k Kind, value string, at int64) error {
	if value == "" {
		return nil
	}
	e := Entry{Kind: k, Value: value, At: at}
	l.add(e)
	if l.store == nil {
		return nil
	}
	if err := l.store.Publish(ctx, k, value, time.Unix(at, 0)); err != nil {
		l.out.add(e, 0)
		l.log.Warn("revocation not shared with other replicas yet: store unavailable; kept and published again when it answers", zap.Error(err))
		return err
	}
	l.out.add(e, l.now().Unix())
	return nil
}

// TokenRevoked reports whether a bearer token of the login provider has
// been ended: the token itself (digest, its SHA-256), the session it was
// obtained for (session, "" when it names none), its provider session
// (sid), or every token of its subject issued (iat, unix seconds) before a
// back-channel logout by sub.
func (l *List) TokenRevoked(digest *[32]byte, session, sid, sub string, iat int64) bool {
	if l.n.Load() == 0 {
		return false
	}
	var b [43]byte // base64url of 32 bytes, without padding
	base64.RawURLEncoding.Encode(b[:], digest[:])
	l.mu.RLock()
	defer l.mu.RUnlock()
	if _, ok := l.maps[Token][string(b[:])]; ok {
		return true
	}
	if _, ok := l.maps[Session][session]; ok && session != "" {
		return true
	}
	if _, ok := l.maps[SID][sid]; ok && sid != "" {
		return true
	}
	if at, ok := l.maps[Subject][sub]; ok && sub != "" && iat <= at {
		return true
	}
	return false
}

// Used reports whether this replica remembers a one-time value as used
// (FirstUse), without recording anything: a cheap first check for input
// that anyone can send.
func (l *List) Used(key string) bool {
	now := l.now().Unix()
	l.onceMu.Lock()
	defer l.onceMu.Unlock()
	return l.once.has(key, now)
}

// FirstUse records a one-time value (a logout token's jti, a login's
// state once its code was accepted, a session's refresh) for ttl and
// reports whether it had not been seen before, here or (with a store) on
// any replica. It is the service's one replay memory: bounded (MaxOnce per
// replica), expired without scanning. Record only what was really used, so
// that anonymous input cannot fill it.
func (l *List) FirstUse(ctx context.Context, key string, ttl time.Duration) bool {
	now := l.now().Unix()
	l.onceMu.Lock()
	fresh := l.once.add(key, now+int64(ttl/time.Second), now)
	evicted := l.once.evicted
	warn := evicted > l.warnedEvicted && now-l.warnedAt >= 60
	if warn {
		l.warnedAt, l.warnedEvicted = now, evicted
	}
	l.onceMu.Unlock()
	if warn {
		l.log.Warn("replay memory full: the entries closest to their expiry were dropped early", zap.Int("max", MaxOnce),
			zap.Int64("dropped_so_far", evicted))
	}
	if !fresh {
		return false
	}
	if l.store != nil {
		fresh, err := l.store.Remember(ctx, key, ttl)
		if err != nil {
			l.log.Warn("replay check limited to this replica: store unavailable", zap.Error(err))
			return true
		}
		return fresh
	}
	return true
}

func (l *List) add(e Entry) {
	if l.now().Unix()-e.At > int64(l.ttl/time.Second) {
		return
	}
	l.mu.Lock()
	m := l.maps[e.Kind]
	if m == nil {
		l.mu.Unlock()
		return
	}
	if old, ok := m[e.Value]; !ok {
		l.n.Add(1)
		m[e.Value] = e.At
	} else if e.At > old {
		m[e.Value] = e.At
	}
	l.mu.Unlock()
}

// expire drops entries older than the longest session.
func (l *List) expire() {
	cut := l.now().Add(-l.ttl).Unix()
	l.mu.Lock()
	for _, m := range l.maps {
		for v, at := range m {
			if at < cut {
				delete(m, v)
				l.n.Add(-1)
			}
		}
	}
	l.mu.Unlock()
}

// Len is the number of entries held.
func (l *List) Len() int { return int(l.n.Load()) }

// OnceLen is the number of one-time values the replay memory holds.
func (l *List) OnceLen() int {
	l.onceMu.Lock()
	defer l.onceMu.Unlock()
	l.once.expire(l.now().Unix())
	return l.once.len()
}

// Run expires entries and, with a store, keeps the list in step with the
// other replicas until ctx ends: a subscription, a full resync every
// interval and whenever the subscription is (re)established, and this
// replica's revocations published again until the store has them (see
// share.go). A store outage is retried; checks never wait for it.
func (l *List) Run(ctx context.Context, interval time.Duration) {
	up := make(chan struct{}, 1)
	if l.store != nil {
		go l.subscribe(ctx, up)
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	retry := time.NewTicker(shareRetry)
	defer retry.Stop()
	l.sync(ctx)
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			l.sync(ctx)
		case <-up:
			// What the others published while this replica was not
			// listening, then what it could not publish, and what a
			// failover may have lost of what it did.
			l.sync(ctx)
			l.share(ctx, true)
		case <-retry.C:
			if l.store != nil && l.Unshared() > 0 {
				l.share(ctx, false)
			}
		}
	}
}

func (l *List) sync(ctx context.Context) {
	l.expire()
	if l.store == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	entries, err := l.store.Load(ctx, l.now().Add(-l.ttl))
	if err != nil {
		if ctx.Err() == nil || err != context.Canceled {
			l.log.Warn("revocation resync failed", zap.Error(err))
		}
		return
	}
	for _, e := range entries {
		l.add(e)
	}
}
