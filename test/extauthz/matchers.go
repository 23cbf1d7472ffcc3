package extauthz

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
)

// Envoy's matchers (envoy.type.matcher.v3, envoy.config.route.v3.HeaderMatcher)
// as the gateway's configuration spells them in protojson, with Envoy's
// semantics. Decoding is strict: a field this emulation does not implement
// is an error, never silently ignored.

// decodeStrict decodes protojson into v, refusing unknown fields.
func decodeStrict(raw json.RawMessage, v any) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	dec.UseNumber()
	return dec.Decode(v)
}

// regexMatcher is envoy.type.matcher.v3.RegexMatcher: RE2, matched against
// the whole value.
type regexMatcher struct {
	Regex     string          `json:"regex"`
	GoogleRe2 json.RawMessage `json:"googleRe2,omitempty"` // RE2 is what Go's regexp implements
	re        *regexp.Regexp
}

func (m *regexMatcher) compile() error {
	re, err := regexp.Compile(`^(?:` + m.Regex + `)$`)
	m.re = re
	return err
}

// stringMatcher is envoy.type.matcher.v3.StringMatcher.
type stringMatcher struct {
	Exact      *string       `json:"exact,omitempty"`
	Prefix     *string       `json:"prefix,omitempty"`
	Suffix     *string       `json:"suffix,omitempty"`
	Contains   *string       `json:"contains,omitempty"`
	SafeRegex  *regexMatcher `json:"safeRegex,omitempty"`
	IgnoreCase bool          `json:"ignoreCase,omitempty"`
}

func (m *stringMatcher) compile() error {
	n := 0
	for _, set := range []bool{m.Exact != nil, m.Prefix != nil, m.Suffix != nil, m.Contains != nil, m.SafeRegex != nil} {
		if set {
			n++
		}
	}
	if n != 1 {
		return fmt.Errorf("string matcher with %d match patterns", n)
	}
	if m.SafeRegex != nil {
		return m.SafeRegex.compile()
	}
	return nil
}

func (m *stringMatcher) match(v string) bool {
	fold := func(s string) string {
		if m.IgnoreCase {
			return strings.ToLower(s)
		}
		return s
	}
	switch {
	case m.Exact != nil:
		return fold(v) == fold(*m.Exact)
	case m.Prefix != nil:
		return strings.HasPrefix(fold(v), fold(*m.Prefix))
	case m.Suffix != nil:
		return strings.HasSuffix(fold(v), fold(*m.Suffix))
	case m.Contains != nil:
		return strings.Contains(fold(v), fold(*m.Contains))
	case m.SafeRegex != nil:
		return m.SafeRegex.re.MatchString(v)
	}
	return false
}

// listStringMatcher is envoy.type.matcher.v3.ListStringMatcher: any pattern.
type listStringMatcher struct {
	Patterns []*stringMatcher `json:"patterns"`
}

func (l *listStringMatcher) compile() error {
	if l == nil {
		return nil
	}
	for _, p := range l.Patterns {
		if err := p.compile(); err != nil {
			return err
		}
	}
	return nil
}

func (l *listStringMatcher) match(v string) bool {
	if l == nil {
		return false
	}
	for _, p := range l.Patterns {
		if p.match(v) {
			return true
		}
	}
	return false
}

// int64Range is envoy.type.v3.Int64Range (int64 is a string in protojson).
type int64Range struct {
	Start json.Number `json:"start,omitempty"`
	End   json.Number `json:"end,omitempty"`
}

// headerMatcher is envoy.config.route.v3.HeaderMatcher, with Envoy's
// HeaderUtility::matchHeaders: several values of a header are joined with
// ","; a missing header matches only a present_match of false (inverted: a
// present_match of true), unless treat_missing_header_as_empty; an
// exact_match of "" matches any value; invert_match inverts the rest.
type headerMatcher struct {
	Name                      string         `json:"name"`
	ExactMatch                *string        `json:"exactMatch,omitempty"`
	SafeRegexMatch            *regexMatcher  `json:"safeRegexMatch,omitempty"`
	RangeMatch                *int64Range    `json:"rangeMatch,omitempty"`
	PresentMatch              *bool          `json:"presentMatch,omitempty"`
	PrefixMatch               *string        `json:"prefixMatch,omitempty"`
	SuffixMatch               *string        `json:"suffixMatch,omitempty"`
	ContainsMatch             *string        `json:"containsMatch,omitempty"`
	StringMatch               *stringMatcher `json:"stringMatch,omitempty"`
	InvertMatch               bool           `json:"invertMatch,omitempty"`
	TreatMissingHeaderAsEmpty bool           `json:"treatMissingHeaderAsEmpty,omitempty"`
}

func (m *headerMatcher) compile() error {
	if m.SafeRegexMatch != nil {
		if err := m.SafeRegexMatch.compile(); err != nil {
			return err
		}
	}
	if m.StringMatch != nil {
		return m.StringMatch.compile()
	}
	return nil
}

func (m *headerMatcher) match(h headerView) bool {
	value, present := h.get(m.Name)
	isPresent := m.PresentMatch != nil || (m.ExactMatch == nil && m.SafeRegexMatch == nil && m.RangeMatch == nil &&
		m.PrefixMatch == nil && m.SuffixMatch == nil && m.ContainsMatch == nil && m.StringMatch == nil)
	presentValue := m.PresentMatch == nil || *m.PresentMatch
	if !present {
		if m.TreatMissingHeaderAsEmpty {
			value = ""
		} else if m.InvertMatch {
			return isPresent && presentValue
		} else {
			return isPresent && !presentValue
		}
	}
	var ok bool
	switch {
	case m.ExactMatch != nil:
		ok = *m.ExactMatch == "" || value == *m.ExactMatch
	case m.SafeRegexMatch != nil:
		ok = m.SafeRegexMatch.re.MatchString(value)
	case m.RangeMatch != nil:
		n, err := strconv.ParseInt(value, 10, 64)
		start, _ := m.RangeMatch.Start.Int64()
		end, _ := m.RangeMatch.End.Int64()
		ok = err == nil && n >= start && n < end
	case m.PrefixMatch != nil:
		ok = strings.HasPrefix(value, *m.PrefixMatch)
	case m.SuffixMatch != nil:
		ok = strings.HasSuffix(value, *m.SuffixMatch)
	case m.ContainsMatch != nil:
		ok = strings.Contains(value, *m.ContainsMatch)
	case m.StringMatch != nil:
		ok = m.StringMatch.match(value)
	default:
		ok = presentValue
	}
	return ok != m.InvertMatch
}

// headerView is a request's headers as Envoy's header map holds them:
// lowercase names, the pseudo-headers :path (with the query), :method,
// :authority (also "host") and :scheme.
type headerView struct {
	h      http.Header
	host   string
	method string
	path   string
	scheme string
}

func (v headerView) get(name string) (string, bool) {
	switch strings.ToLower(name) {
	case ":path":
		return v.path, true
	case ":method":
		return v.method, true
	case ":authority", "host":
		return v.host, true
	case ":scheme":
		return v.scheme, true
	}
	vals, ok := v.h[http.CanonicalHeaderKey(name)]
	if !ok {
		return "", false
	}
	return strings.Join(vals, ","), true
}

// pathMatcher is envoy.type.matcher.v3.PathMatcher: the path without query
// and fragment, as the HCM left it (no decoding).
type pathMatcher struct {
	Path *stringMatcher `json:"path"`
}

func (m *pathMatcher) compile() error {
	if m.Path == nil {
		return fmt.Errorf("path matcher without path")
	}
	return m.Path.compile()
}

func (m *pathMatcher) match(path string) bool {
	if i := strings.IndexAny(path, "?#"); i >= 0 {
		path = path[:i]
	}
	return m.Path.match(path)
}

// pathSegment is one key of a metadata path.
type pathSegment struct {
	Key string `json:"key"`
}

// doubleMatcher is envoy.type.matcher.v3.DoubleMatcher.
type doubleMatcher struct {
	Range *struct {
		Start float64 `json:"start"`
		End   float64 `json:"end"`
	} `json:"range,omitempty"`
	Exact *float64 `json:"exact,omitempty"`
}

// valueMatcher is envoy.type.matcher.v3.ValueMatcher.
type valueMatcher struct {
	NullMatch    *struct{}      `json:"nullMatch,omitempty"`
	DoubleMatch  *doubleMatcher `json:"doubleMatch,omitempty"`
	StringMatch  *stringMatcher `json:"stringMatch,omitempty"`
	BoolMatch    *bool          `json:"boolMatch,omitempty"`
	PresentMatch *bool          `json:"presentMatch,omitempty"`
	ListMatch    *struct {
		OneOf *valueMatcher `json:"oneOf"`
	} `json:"listMatch,omitempty"`
	OrMatch *struct {
		ValueMatchers []*valueMatcher `json:"valueMatchers"`
	} `json:"orMatch,omitempty"`
}

func (m *valueMatcher) compile() error {
	switch {
	case m.StringMatch != nil:
		return m.StringMatch.compile()
	case m.ListMatch != nil:
		if m.ListMatch.OneOf == nil {
			return fmt.Errorf("list matcher without oneOf")
		}
		return m.ListMatch.OneOf.compile()
	case m.OrMatch != nil:
		for _, v := range m.OrMatch.ValueMatchers {
			if err := v.compile(); err != nil {
				return err
			}
		}
	}
	return nil
}

// match is Envoy's Matchers::ValueMatcher on a google.protobuf.Value
// (nil: not set; JSON numbers are doubles).
func (m *valueMatcher) match(v any) bool {
	switch {
	case m.NullMatch != nil:
		return v == nil
	case m.DoubleMatch != nil:
		f, ok := v.(float64)
		if !ok {
			return false
		}
		if m.DoubleMatch.Exact != nil {
			return f == *m.DoubleMatch.Exact
		}
		return m.DoubleMatch.Range != nil && f >= m.DoubleMatch.Range.Start && f < m.DoubleMatch.Range.End
	case m.StringMatch != nil:
		s, ok := v.(string)
		return ok && m.StringMatch.match(s)
	case m.BoolMatch != nil:
		b, ok := v.(bool)
		return ok && b == *m.BoolMatch
	case m.PresentMatch != nil:
		return (v != nil) == *m.PresentMatch
	case m.ListMatch != nil:
		l, ok := v.([]any)
		if !ok {
			return false
		}
		for _, e := range l {
			if m.ListMatch.OneOf.match(e) {
				return true
			}
		}
		return false
	case m.OrMatch != nil:
		for _, o := range m.OrMatch.ValueMatchers {
			if o.match(v) {
				return true
			}
		}
	}
	return false
}

// metadataMatcher is envoy.type.matcher.v3.MetadataMatcher on the request's
// dynamic metadata: the value at filter/path (not set when any key is
// missing or not a structure), then invert.
type metadataMatcher struct {
	Filter string         `json:"filter"`
	Path   []*pathSegment `json:"path"`
	Value  *valueMatcher  `json:"value"`
	Invert bool           `json:"invert,omitempty"`
}

func (m *metadataMatcher) compile() error {
	if m.Value == nil {
		return fmt.Errorf("metadata matcher without value")
	}
	return m.Value.compile()
}

func (m *metadataMatcher) match(md map[string]map[string]any) bool {
	var v any = md[m.Filter]
	if md[m.Filter] == nil {
		v = nil
	}
	for _, seg := range m.Path {
		s, ok := v.(map[string]any)
		if !ok {
			v = nil
			break
		}
		v = s[seg.Key]
	}
	return m.Value.match(v) != m.Invert
}

// cidrRange is envoy.config.core.v3.CidrRange.
type cidrRange struct {
	AddressPrefix string      `json:"addressPrefix"`
	PrefixLen     json.Number `json:"prefixLen,omitempty"`
}

func (c *cidrRange) contains(ip string) bool {
	addr := net.ParseIP(ip)
	base := net.ParseIP(c.AddressPrefix)
	if addr == nil || base == nil {
		return false
	}
	bits := 32
	if base.To4() == nil {
		bits = 128
	}
	n, err := c.PrefixLen.Int64()
	if err != nil {
		n = 0 // an unset prefix_len is 0: any address of the family
	}
	if (base.To4() == nil) != (addr.To4() == nil) {
		return false
	}
	mask := net.CIDRMask(int(n), bits)
	return base.Mask(mask).Equal(addr.Mask(mask))
}
