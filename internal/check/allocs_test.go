package check

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHotPathAllocations: the checks every request to the cluster makes
// allocate no more than they did when the check path was measured at a
// bare server's speed (docs/performance.md). Counts, not time: an
// allocation that creeps in (a request escaping to the heap through a
// function value, an error page built for a verified credential) fails
// here, where a benchmark would only report it. Both regressions of the
// 2026-12 round were of that kind: +1 allocation of 128 B on every check,
// +4 on a cached bearer token.
func TestHotPathAllocations(t *testing.T) {
	tok := strings.Repeat("a", 300) + "." + strings.Repeat("b", 400) + "." + strings.Repeat("c", 342)
	f := newFixtureWith(t, nil, fixedToken{raw: tok, exp: time.Now().Add(time.Hour)})
	c := f.cookie(t, "user@example.com", []string{"team-a", "team-b"}, f.now.Add(time.Hour))
	for _, tc := range []struct {
		name string
		r    *http.Request
		code int
		max  float64
	}{
		// The Cookie header rewritten without the service's own cookie (the
		// identity's header values are made once per session).
		{"session cookie, cached", benchRequest("GET", "/notebook/ns/nb/lab", map[string]string{"Cookie": "_ga=GA1.1.1; authservice_session=" + c}), 200, 1},
		{"session as bearer, cached", benchRequest("POST", "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + c}), 200, 0},
		{"bearer token, cached", benchRequest("POST", "/pipeline/apis/v2beta1/runs", map[string]string{"Authorization": "Bearer " + tok}), 200, 0},
		{"skip path", benchRequest("GET", "/dex/auth/local?req=abc", nil), 200, 0},
		// The 401's JSON body and its WWW-Authenticate value.
		{"XHR without credentials", benchRequest("GET", "/api/workgroup/env-info", map[string]string{"X-Requested-With": "XMLHttpRequest"}), 401, 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &benchWriter{h: http.Header{}}
			f.h.ServeHTTP(w, tc.r)
			if w.code != tc.code {
				t.Fatalf("status %d, want %d", w.code, tc.code)
			}
			n := testing.AllocsPerRun(200, func() {
				clear(w.h)
				f.h.ServeHTTP(w, tc.r)
			})
			t.Logf("%v allocations per check (budget %v)", n, tc.max)
			if n > tc.max {
				t.Errorf("%v allocations per check, at most %v", n, tc.max)
			}
		})
	}
}
