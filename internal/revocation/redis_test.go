package revocation

import (
	"strings"
	"testing"
)

// A malformed REDIS_URL is reported without its password: the error ends
// up in the start-up log and in check-config's output.
func TestRedisURLErrorsHideThePassword(t *testing.T) {
	for _, u := range []string{
		"redis://user:s3cret-pw@host:notaport/0",
		"redis://:s3cret-pw@host:6379/notadb",
		"rediss://user:s3cret-pw@[::1/0",
		"http://user:s3cret-pw@host:6379/0",
	} {
		_, err := NewRedisStore(u, "x")
		if err == nil {
			t.Fatalf("%s accepted", u)
		}
		if strings.Contains(err.Error(), "s3cret-pw") || !strings.HasPrefix(err.Error(), "REDIS_URL: ") {
			t.Errorf("%s: %v", u, err)
		}
	}
}
