// Package identity owns the mapping from a provider's claims to the identity
// the service forwards: the user id (USERID_CLAIM, USERID_TRANSFORMERS) and
// the groups (GROUPS_CLAIM), sanitized so that nothing a provider or a user
// controls can smuggle a header line, a second group or a second user.
package identity

import (
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/oidc-authservice/oidc-authservice/internal/logtext"
)

// Limits on what a provider may put into an identity.
const (
	MaxUserID    = 512
	MaxGroupName = 512
	MaxGroups    = 256
)

// ErrNoUserID: the user id claim is missing or empty. Like every error of
// FromClaims (for errors.Is), it means the login cannot proceed.
var ErrNoUserID = errors.New("user id claim missing or empty")

// ErrBadUserID: the user id claim is not a string that can be forwarded.
var ErrBadUserID = errors.New("user id claim unusable")

// ErrBadGroups: the groups claim is not a list of strings.
var ErrBadGroups = errors.New("groups claim is not a list of strings")

// ErrEmailUnverified: the user id is the email claim and the provider says
// it is not verified (email_verified present and not true).
var ErrEmailUnverified = errors.New("email_verified is not true")

// Identity is who a request is from, as forwarded upstream.
type Identity struct {
	User   string   // after transformers, without USERID_PREFIX
	Groups []string // sanitized
}

// Mapper turns claims into an Identity.
type Mapper struct {
	UserClaim    string // USERID_CLAIM
	GroupsClaim  string // GROUPS_CLAIM
	Transformers []Transformer
	// AllowUnverifiedEmail accepts an email user id whose email_verified
	// claim is false (ALLOW_UNVERIFIED_EMAIL).
	AllowUnverifiedEmail bool
}

// Transformer rewrites a user id (USERID_TRANSFORMERS): the first whose
// Matches matches replaces it.
type Transformer struct {
	Matches  *regexp.Regexp
	Replaces string
}

// FromClaims maps claims to an Identity. dropped lists group names that were
// left out because they could not be forwarded safely (commas, control
// characters, oversize), for the log.
func (m *Mapper) FromClaims(claims map[string]any) (id Identity, dropped []string, err error) {
	raw, ok := claims[m.UserClaim]
	if !ok || raw == nil {
		return id, nil, fmt.Errorf("%w: %q", ErrNoUserID, m.UserClaim)
	}
	user, ok := raw.(string)
	if !ok {
		return id, nil, fmt.Errorf("%w: %q is a %T, not a string", ErrBadUserID, m.UserClaim, raw)
	}
	if user == "" {
		return id, nil, fmt.Errorf("%w: %q", ErrNoUserID, m.UserClaim)
	}
	// The same rule as for bearer tokens (and kube-apiserver): an email
	// user id counts only when the provider does not say it is unverified.
	// On a provider with self-registration anyone can claim a colleague's
	// address.
	if v, ok := claims["email_verified"]; ok && v != true && m.UserClaim == "email" && !m.AllowUnverifiedEmail {
		return id, nil, fmt.Errorf("%w: %v", ErrEmailUnverified, v)
	}
	user = m.Transform(user)
	if err := checkValue(user, MaxUserID); err != nil {
		return id, nil, fmt.Errorf("%w: %v", ErrBadUserID, err)
	}
	id.User = user
	id.Groups, dropped, err = groupsOf(claims[m.GroupsClaim])
	return id, dropped, err
}

// Transform applies the first USERID_TRANSFORMERS rule that matches.
func (m *Mapper) Transform(user string) string {
	for _, t := range m.Transformers {
		if t.Matches.MatchString(user) {
			return t.Matches.ReplaceAllString(user, t.Replaces)
		}
	}
	return user
}

func groupsOf(raw any) (out, dropped []string, err error) {
	if raw == nil {
		return nil, nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, nil, fmt.Errorf("%w: got %T", ErrBadGroups, raw)
	}
	for _, v := range list {
		g, ok := v.(string)
		if !ok {
			return nil, nil, fmt.Errorf("%w: element of type %T", ErrBadGroups, v)
		}
		if checkValue(g, MaxGroupName) != nil || strings.ContainsRune(g, ',') || len(out) >= MaxGroups {
			dropped = append(dropped, logtext.Bound(g, 64))
			continue
		}
		out = append(out, g)
	}
	return out, dropped, nil
}

// checkValue refuses what cannot travel in a header value unchanged:
// control characters (CR, LF, NUL, ...), invalid UTF-8 and oversize values.
func checkValue(v string, limit int) error {
	if v == "" {
		return errors.New("empty")
	}
	if len(v) > limit {
		return fmt.Errorf("longer than %d bytes", limit)
	}
	for _, r := range v {
		if r < 0x20 || r == 0x7f || r == '\uFFFD' {
			return fmt.Errorf("contains a control character or invalid UTF-8")
		}
	}
	return nil
}

// Clean checks and sanitizes an identity from any source (sessions map
// claims with FromClaims; bearer tokens arrive mapped already): the user id
// must be forwardable, groups that are not are left out and returned.
func Clean(user string, groups []string) (string, []string, []string, error) {
	if err := checkValue(user, MaxUserID); err != nil {
		return "", nil, nil, fmt.Errorf("%w: %v", ErrBadUserID, err)
	}
	raw := make([]any, len(groups))
	for i, g := range groups {
		raw[i] = g
	}
	out, dropped, _ := groupsOf(raw)
	return user, out, dropped, nil
}
