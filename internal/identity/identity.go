// Package identity owns the mapping from a provider's claims to the identity
// the service forwards: the user id (USERID_CLAIM, USERID_TRANSFORMERS) and
// the groups (GROUPS_CLAIM), sanitized so that nothing a provider or a user
// controls can smuggle a header line, a second group or a second user, then
// filtered and bounded by the groups policy (GROUPS_FILTER, GROUPS_MAX,
// GROUPS_OVERFLOW), the same wherever groups enter.
package identity

import (
	"errors"
	"fmt"
	"regexp"
)

// Limits on what a provider may put into an identity; the number of groups
// and their joined length are the GroupsPolicy's.
const (
	MaxUserID    = 512
	MaxGroupName = 512
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
	// Groups sanitizes, filters and bounds the groups of every identity;
	// nil: NewGroupsPolicy's defaults (no filter, DefaultMaxGroups, no byte
	// bound, refuse beyond).
	Groups *GroupsPolicy
}

var defaultPolicy = NewGroupsPolicy(GroupsOptions{})

// Policy is the mapper's groups policy.
func (m *Mapper) Policy() *GroupsPolicy {
	if m.Groups == nil {
		return defaultPolicy
	}
	return m.Groups
}

// Transformer rewrites a user id (USERID_TRANSFORMERS): the first whose
// Matches matches replaces it.
type Transformer struct {
	Matches  *regexp.Regexp
	Replaces string
}

// FromClaims maps claims to an Identity, its groups through the groups
// policy; the report says what became of them, for the log. Groups beyond
// the policy's limits are an *OverflowError (errors.Is ErrTooManyGroups)
// unless it truncates.
func (m *Mapper) FromClaims(claims map[string]any) (id Identity, report GroupsReport, err error) {
	raw, ok := claims[m.UserClaim]
	if !ok || raw == nil {
		return id, report, fmt.Errorf("%w: %q", ErrNoUserID, m.UserClaim)
	}
	user, ok := raw.(string)
	if !ok {
		return id, report, fmt.Errorf("%w: %q is a %T, not a string", ErrBadUserID, m.UserClaim, raw)
	}
	if user == "" {
		return id, report, fmt.Errorf("%w: %q", ErrNoUserID, m.UserClaim)
	}
	// The same rule as for bearer tokens (and kube-apiserver): an email
	// user id counts only when the provider does not say it is unverified.
	// On a provider with self-registration anyone can claim a colleague's
	// address.
	if v, ok := claims["email_verified"]; ok && v != true && m.UserClaim == "email" && !m.AllowUnverifiedEmail {
		return id, report, fmt.Errorf("%w: %v", ErrEmailUnverified, v)
	}
	user = m.Transform(user)
	if err := m.checkUser(user); err != nil {
		return id, report, fmt.Errorf("%w: %v", ErrBadUserID, err)
	}
	groups, err := groupsOf(claims[m.GroupsClaim])
	if err != nil {
		return id, report, err
	}
	id.User = user
	id.Groups, report, err = m.Policy().Apply(groups)
	return id, report, err
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

// groupsOf reads the groups claim: absent or null is no groups, anything
// but a list of strings is an error.
func groupsOf(raw any) ([]string, error) {
	if raw == nil {
		return nil, nil
	}
	list, ok := raw.([]any)
	if !ok {
		return nil, fmt.Errorf("%w: got %T", ErrBadGroups, raw)
	}
	out := make([]string, 0, len(list))
	for _, v := range list {
		g, ok := v.(string)
		if !ok {
			return nil, fmt.Errorf("%w: element of type %T", ErrBadGroups, v)
		}
		out = append(out, g)
	}
	return out, nil
}

// checkUser refuses a user id that cannot be forwarded: checkValue's
// rules, and MaxUserID as the groups policy measures (with issued tokens,
// JSON-escaped: the token's sub and email carry it so, and its room for the
// groups is reckoned with a user id of MaxUserID bytes there).
func (m *Mapper) checkUser(user string) error {
	if err := checkValue(user, MaxUserID); err != nil {
		return err
	}
	if n := m.Policy().Size(user); n > MaxUserID {
		return fmt.Errorf("longer than %d bytes in the issued token's JSON (%d: each \" and \\ counts 2, U+2028 and U+2029 6)", MaxUserID, n)
	}
	return nil
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

// Clean checks and maps an identity that arrives mapped already (bearer
// tokens, TokenReview; sessions map claims with FromClaims): the user id,
// transformed, must be forwardable, and the groups go through the groups
// policy as at login.
func (m *Mapper) Clean(user string, groups []string) (Identity, GroupsReport, error) {
	user = m.Transform(user)
	if err := m.checkUser(user); err != nil {
		return Identity{}, GroupsReport{}, fmt.Errorf("%w: %v", ErrBadUserID, err)
	}
	out, report, err := m.Policy().Apply(groups)
	return Identity{User: user, Groups: out}, report, err
}
