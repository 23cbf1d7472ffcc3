package check

import (
	"net/url"
	"strings"
	"testing"
)

// A login state is remembered as used only once the provider accepted its
// code: a callback an anonymous client makes with the state it was just
// given — without a code, with a made-up one, with a provider error — is
// refused and leaves nothing behind, so no flood of them can grow the
// replay memory. (A replayed code and state are refused in
// test/integration, with real Dex codes.)
func TestCallbacksThatConsumeNothingAreNotRemembered(t *testing.T) {
	f := newFixture(t, nil)
	pending := func() (state, cookie string) {
		w := f.do("GET", "/notebook/", nil)
		loc, err := url.Parse(w.Header().Get("Location"))
		if err != nil || w.Code != 302 {
			t.Fatalf("no login started: %d %v", w.Code, err)
		}
		state = loc.Query().Get("state")
		for _, c := range w.Result().Cookies() {
			if c.Name == "authservice_state_"+state {
				cookie = c.Name + "=" + c.Value
			}
		}
		if cookie == "" {
			t.Fatal("no login-state cookie")
		}
		return state, cookie
	}
	for _, c := range []struct {
		name, query string
		want        int
	}{
		{"no code", "", 400},
		{"made-up code", "&code=made-up", 401}, // the provider's token endpoint refuses it
		{"oversized code", "&code=" + strings.Repeat("c", 5000), 400},
		{"provider error", "&error=access_denied", 401},
	} {
		t.Run(c.name, func(t *testing.T) {
			state, cookie := pending()
			for i := range 3 { // the same callback again and again
				w := f.do("GET", "/authservice/oidc/callback?state="+state+c.query, map[string]string{"Cookie": cookie})
				if w.Code != c.want {
					t.Fatalf("callback %d: %d, want %d", i, w.Code, c.want)
				}
			}
			if n := f.h.d.Revocations.OnceLen(); n != 0 {
				t.Fatalf("the replay memory holds %d values after callbacks that consumed nothing", n)
			}
		})
	}
}
