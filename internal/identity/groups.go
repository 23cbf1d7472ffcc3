package identity

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
)

// DefaultMaxGroups is GROUPS_MAX's default.
const DefaultMaxGroups = 256

// ErrTooManyGroups: the groups that pass GROUPS_FILTER are more, or longer
// joined, than the service forwards (GROUPS_MAX, UPSTREAM_HEADER_MAX_BYTES),
// and GROUPS_OVERFLOW is not truncate. Errors of this kind are an
// *OverflowError.
var ErrTooManyGroups = errors.New("more groups than the service forwards")

// OverflowError says by how much an identity's groups exceed the limits.
type OverflowError struct {
	Received  int // groups the provider or token listed
	Groups    int // left after sanitizing and GROUPS_FILTER
	Bytes     int // those joined with commas (as GroupsPolicy.Size measures)
	MaxGroups int // GROUPS_MAX
	MaxBytes  int // the longest joined value the groups header may carry (0: none)
}

func (e *OverflowError) Error() string {
	return fmt.Sprintf("%v: %d groups (%d bytes joined) after GROUPS_FILTER, of %d received; at most %d groups and %d bytes are forwarded",
		ErrTooManyGroups, e.Groups, e.Bytes, e.Received, e.MaxGroups, e.MaxBytes)
}

// Unwrap makes errors.Is(err, ErrTooManyGroups) hold.
func (e *OverflowError) Unwrap() error { return ErrTooManyGroups }

// GroupsPolicy is what becomes of the groups of every identity, wherever
// they enter (login: ID token and userinfo; sessions sealed under another
// policy; bearer tokens of every issuer; TokenReview): names that cannot
// travel in a header are left out, then only those GROUPS_FILTER keeps
// stay, then the limits apply: beyond them the identity is refused (an
// *OverflowError), or with Truncate the first groups that fit are kept.
type GroupsPolicy struct {
	filter      *regexp.Regexp
	prefixes    []string
	max         int
	maxBytes    int
	truncate    bool
	json        bool
	fingerprint string
}

// GroupsOptions configure a GroupsPolicy.
type GroupsOptions struct {
	// Filter keeps the groups it matches anywhere in the name (RE2, as
	// regexp.MatchString: anchor it with ^ and $); nil: no expression.
	Filter *regexp.Regexp
	// Prefixes keeps the groups that start with one of them. With neither
	// Filter nor Prefixes every group is kept; with both, a group either
	// keeps stays.
	Prefixes []string
	Max      int  // groups kept at most; 0: DefaultMaxGroups
	MaxBytes int  // the kept groups joined with commas, at most; 0: no bound
	Truncate bool // beyond the limits keep the first groups that fit, instead of refusing
	// JSON measures the names for MaxBytes as a JSON string carries them
	// (JSONLen: each " and \ 2 bytes, U+2028 and U+2029 6), not as a
	// header does: with UPSTREAM_TOKEN=issued the token carries them so,
	// and never shorter than in the header. User ids are measured so too
	// (MaxUserID).
	JSON bool
}

// NewGroupsPolicy builds the policy.
func NewGroupsPolicy(o GroupsOptions) *GroupsPolicy {
	if o.Max <= 0 {
		o.Max = DefaultMaxGroups
	}
	p := &GroupsPolicy{filter: o.Filter, prefixes: o.Prefixes, max: o.Max, maxBytes: o.MaxBytes, truncate: o.Truncate, json: o.JSON}
	// What a session sealed under this policy records, so that one sealed
	// under another (an older release, another filter) is filtered again
	// when it is opened.
	h := sha256.New()
	if o.Filter != nil {
		h.Write([]byte(o.Filter.String()))
	}
	h.Write([]byte{0})
	h.Write([]byte(strings.Join(o.Prefixes, "\x00")))
	fmt.Fprintf(h, "\x00%d\x00%d\x00%t", p.max, p.maxBytes, p.truncate)
	if p.json {
		h.Write([]byte("\x00json"))
	}
	p.fingerprint = hex.EncodeToString(h.Sum(nil)[:6])
	return p
}

// Fingerprint names the policy: equal for equal settings.
func (p *GroupsPolicy) Fingerprint() string { return p.fingerprint }

// MaxBytes is the longest comma-joined value kept (0: no bound), measured
// by Size.
func (p *GroupsPolicy) MaxBytes() int { return p.maxBytes }

// Size is how many bytes s counts for the limits: its length, or with the
// JSON option its JSONLen.
func (p *GroupsPolicy) Size(s string) int {
	if p.json {
		return JSONLen(s)
	}
	return len(s)
}

// JSONLen is the length of s inside a JSON string as the issued tokens
// write it (encoding/json without HTML escaping) for s with no control
// character and valid UTF-8 (what checkValue lets through): each " and \
// takes 2 bytes, U+2028 and U+2029 6 (\u2028), every other byte 1.
func JSONLen(s string) int {
	n := len(s)
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			n++
		case c == 0xe2 && i+2 < len(s) && s[i+1] == 0x80 && (s[i+2] == 0xa8 || s[i+2] == 0xa9):
			n += 3 // 3 bytes of UTF-8, 6 escaped
		}
	}
	return n
}

// Keeps reports whether the filter keeps the group g.
func (p *GroupsPolicy) Keeps(g string) bool {
	if p.filter == nil && len(p.prefixes) == 0 {
		return true
	}
	for _, pre := range p.prefixes {
		if strings.HasPrefix(g, pre) {
			return true
		}
	}
	return p.filter != nil && p.filter.MatchString(g)
}

// GroupsReport counts what became of an identity's groups, for the one log
// line and the metrics (never the names: thousands of them would make a
// line of hundreds of kilobytes).
type GroupsReport struct {
	Received  int    // listed by the source
	Unsafe    int    // left out: empty, commas, control characters, invalid UTF-8, over MaxGroupName bytes
	Filtered  int    // left out by GROUPS_FILTER
	Truncated int    // left out beyond the limits (GROUPS_OVERFLOW=truncate)
	Kept      int    // forwarded
	Bytes     int    // the kept groups joined with commas (measured by Size)
	Example   string // the first unsafe name, bounded, to show what was wrong
}

// Changed reports whether anything was left out for a reason worth a log
// line: unsafe names or truncation (filtering is what the operator asked
// for).
func (r GroupsReport) Changed() bool { return r.Unsafe > 0 || r.Truncated > 0 }

// Apply sanitizes, filters and bounds groups. The result shares no memory
// with groups. An *OverflowError comes back when the groups exceed the
// limits and the policy does not truncate.
func (p *GroupsPolicy) Apply(groups []string) ([]string, GroupsReport, error) {
	r := GroupsReport{Received: len(groups)}
	var out []string
	for _, g := range groups {
		if checkValue(g, MaxGroupName) != nil || strings.ContainsRune(g, ',') {
			if r.Unsafe == 0 {
				r.Example = logtext.Bound(g, 64)
			}
			r.Unsafe++
			continue
		}
		if !p.Keeps(g) {
			r.Filtered++
			continue
		}
		out = append(out, g)
	}
	bytes := p.joinedLen(out)
	if len(out) > p.max || (p.maxBytes > 0 && bytes > p.maxBytes) {
		if !p.truncate {
			return nil, r, &OverflowError{Received: r.Received, Groups: len(out), Bytes: bytes, MaxGroups: p.max, MaxBytes: p.maxBytes}
		}
		n, b := 0, 0
		for _, g := range out {
			next := b + p.Size(g)
			if n > 0 {
				next++
			}
			if n == p.max || (p.maxBytes > 0 && next > p.maxBytes) {
				break
			}
			n, b = n+1, next
		}
		r.Truncated = len(out) - n
		out, bytes = out[:n:n], b
	}
	r.Kept, r.Bytes = len(out), bytes
	return out, r, nil
}

func (p *GroupsPolicy) joinedLen(groups []string) int {
	n := 0
	for _, g := range groups {
		n += p.Size(g)
	}
	if len(groups) > 1 {
		n += len(groups) - 1
	}
	return n
}
