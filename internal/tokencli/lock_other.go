//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package tokencli

import "context"

// lock does nothing where flock is missing: parallel runs may then both
// renew, which costs a second refresh or login, not a wrong token.
func lock(ctx context.Context, path string, waiting func()) (unlock func(), err error) {
	return func() {}, nil
}
