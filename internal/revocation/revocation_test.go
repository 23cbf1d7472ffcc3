package revocation

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
)

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// The replay memory holds at most MaxOnce values, however many arrive, and
// drops each when it expires without scanning the rest.
func TestReplayMemoryIsBounded(t *testing.T) {
	c := &clock{time.Unix(1_700_000_000, 0)}
	l := New(time.Hour, nil, c.now, zap.NewNop())
	ctx := context.Background()
	for i := range MaxOnce + 5_000 {
		if !l.FirstUse(ctx, fmt.Sprintf("state:%d", i), 11*time.Minute) {
			t.Fatalf("value %d not new", i)
		}
	}
	if n := l.OnceLen(); n != MaxOnce {
		t.Fatalf("replay memory holds %d values, want the bound %d", n, MaxOnce)
	}
	// The newest are kept (the oldest were closest to their expiry).
	if !l.Used(fmt.Sprintf("state:%d", MaxOnce+4_999)) || l.Used("state:0") {
		t.Fatal("the memory kept the oldest values instead of the newest")
	}
	if l.FirstUse(ctx, fmt.Sprintf("state:%d", MaxOnce+4_999), 11*time.Minute) {
		t.Fatal("a remembered value was accepted twice")
	}
	c.t = c.t.Add(12 * time.Minute)
	if n := l.OnceLen(); n != 0 {
		t.Fatalf("%d values outlived their expiry", n)
	}
}

// Values expire in the order of their own expiry, whatever order they came
// in; a value is remembered until then, not a second longer.
func TestReplayMemoryExpiry(t *testing.T) {
	c := &clock{time.Unix(1_700_000_000, 0)}
	l := New(time.Hour, nil, c.now, zap.NewNop())
	ctx := context.Background()
	ttls := map[string]time.Duration{"a": 5 * time.Minute, "b": time.Minute, "c": 3 * time.Minute, "d": 7 * time.Minute}
	for _, k := range []string{"a", "b", "c", "d"} {
		l.FirstUse(ctx, k, ttls[k])
	}
	for _, step := range []struct {
		after time.Duration
		used  string
	}{{30 * time.Second, "abcd"}, {2 * time.Minute, "acd"}, {4 * time.Minute, "ad"}, {6 * time.Minute, "d"}, {8 * time.Minute, ""}} {
		c.t = time.Unix(1_700_000_000, 0).Add(step.after)
		got := ""
		for _, k := range []string{"a", "b", "c", "d"} {
			if l.Used(k) {
				got += k
			}
		}
		if got != step.used {
			t.Errorf("after %s: remembered %q, want %q", step.after, got, step.used)
		}
		if n := l.OnceLen(); n != len(step.used) {
			t.Errorf("after %s: %d values held, want %d", step.after, n, len(step.used))
		}
	}
}

// A token revocation is kept until the token expires and no longer; a
// provider token is refused by the session it was obtained for, its sid, or
// its subject when issued before a revocation by subject.
func TestTokenRevocations(t *testing.T) {
	c := &clock{time.Unix(1_700_000_000, 0)}
	l := New(24*time.Hour, nil, c.now, zap.NewNop())
	ctx := context.Background()
	d := sha256.Sum256([]byte("a.b.c"))
	other := sha256.Sum256([]byte("x.y.z"))
	if l.TokenRevoked(&d, "s1", "p1", "u1", c.t.Unix()) {
		t.Fatal("revoked on an empty list")
	}
	l.RevokeToken(ctx, d, c.t.Add(30*time.Minute).Unix())
	if !l.TokenRevoked(&d, "", "", "", 0) || l.TokenRevoked(&other, "", "", "", 0) {
		t.Fatal("by digest")
	}
	l.Revoke(ctx, Session, "s1")
	l.Revoke(ctx, SID, "p1")
	l.Revoke(ctx, Subject, "u1")
	for _, k := range []struct {
		name              string
		session, sid, sub string
		iat               int64
		want              bool
	}{
		{"session", "s1", "", "", 0, true},
		{"sid", "", "p1", "", 0, true},
		{"subject, issued before", "", "", "u1", c.t.Unix() - 10, true},
		{"subject, issued after", "", "", "u1", c.t.Unix() + 10, false},
		{"other session", "s2", "p2", "u2", 0, false},
	} {
		if got := l.TokenRevoked(&other, k.session, k.sid, k.sub, k.iat); got != k.want {
			t.Errorf("%s: revoked %v, want %v", k.name, got, k.want)
		}
	}
	c.t = c.t.Add(31 * time.Minute)
	l.expire()
	if l.TokenRevoked(&d, "", "", "", 0) {
		t.Fatal("the token's entry outlived the token")
	}
	if l.Len() != 3 {
		t.Fatalf("%d entries, want the three that last the retention", l.Len())
	}
}
