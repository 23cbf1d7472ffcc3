package extauthz

import (
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strings"
)

// The route configuration (envoy.config.route.v3.RouteConfiguration) and
// Envoy's matching: the virtual host by Host (exact domains, then the
// longest "*.suffix", then the longest "prefix.*", then "*"; the port
// ignored with ignore_port_in_host_matching), then its first route whose
// match matches the :path the HCM rewrote.

type routeConfig struct {
	Name                           string         `json:"name"`
	VirtualHosts                   []*virtualHost `json:"virtualHosts"`
	IgnorePortInHostMatching       bool           `json:"ignorePortInHostMatching,omitempty"`
	ValidateClusters               bool           `json:"validateClusters,omitempty"`
	MaxDirectResponseBodySizeBytes json.Number    `json:"maxDirectResponseBodySizeBytes,omitempty"`
}

type virtualHost struct {
	Name                       string   `json:"name"`
	Domains                    []string `json:"domains"`
	Routes                     []*route `json:"routes"`
	IncludeRequestAttemptCount bool     `json:"includeRequestAttemptCount,omitempty"`
}

type route struct {
	Match     *routeMatch     `json:"match"`
	Route     *routeAction    `json:"route,omitempty"`
	Decorator json.RawMessage `json:"decorator,omitempty"` // tracing's operation name
	Metadata  json.RawMessage `json:"metadata,omitempty"`  // Istio's source of the route
}

// routeAction is the part of envoy.config.route.v3.RouteAction the
// gateway acts on; timeouts and retries are acknowledged, not emulated
// (the tests' upstreams answer at once).
type routeAction struct {
	Cluster        string          `json:"cluster"`
	PrefixRewrite  *string         `json:"prefixRewrite,omitempty"`
	Timeout        string          `json:"timeout,omitempty"`
	MaxGrpcTimeout string          `json:"maxGrpcTimeout,omitempty"`
	RetryPolicy    json.RawMessage `json:"retryPolicy,omitempty"`
}

// routeMatch is envoy.config.route.v3.RouteMatch (routes and jwt_authn's
// rules).
type routeMatch struct {
	Prefix              *string          `json:"prefix,omitempty"`
	Path                *string          `json:"path,omitempty"`
	SafeRegex           *regexMatcher    `json:"safeRegex,omitempty"`
	PathSeparatedPrefix *string          `json:"pathSeparatedPrefix,omitempty"`
	CaseSensitive       *bool            `json:"caseSensitive,omitempty"`
	Headers             []*headerMatcher `json:"headers,omitempty"`
	QueryParameters     []*struct {
		Name         string         `json:"name"`
		StringMatch  *stringMatcher `json:"stringMatch,omitempty"`
		PresentMatch bool           `json:"presentMatch,omitempty"`
	} `json:"queryParameters,omitempty"`
}

func (m *routeMatch) compile() error {
	if m == nil {
		return fmt.Errorf("route without match")
	}
	if m.SafeRegex != nil {
		if err := m.SafeRegex.compile(); err != nil {
			return err
		}
	}
	for _, h := range m.Headers {
		if err := h.compile(); err != nil {
			return err
		}
	}
	for _, q := range m.QueryParameters {
		if q.StringMatch != nil {
			if err := q.StringMatch.compile(); err != nil {
				return err
			}
		}
	}
	return nil
}

// matches is RouteEntryImplBase's matching on the rewritten :path: prefix
// on the whole :path, path and regex on the path without the query;
// case-sensitive unless case_sensitive is false; then headers and query
// parameters.
func (m *routeMatch) matches(s *stream) bool {
	full := s.path
	p, q, _ := strings.Cut(full, "?")
	cs := m.CaseSensitive == nil || *m.CaseSensitive
	eq := func(a, b string) bool {
		if cs {
			return a == b
		}
		return strings.EqualFold(a, b)
	}
	hasPrefix := func(a, b string) bool { return len(a) >= len(b) && eq(a[:len(b)], b) }
	ok := false
	switch {
	case m.Prefix != nil:
		ok = hasPrefix(full, *m.Prefix)
	case m.Path != nil:
		ok = eq(p, *m.Path)
	case m.SafeRegex != nil:
		ok = m.SafeRegex.re.MatchString(p)
	case m.PathSeparatedPrefix != nil:
		pre := *m.PathSeparatedPrefix
		ok = hasPrefix(p, pre) && (len(p) == len(pre) || p[len(pre)] == '/')
	}
	if !ok {
		return false
	}
	v := s.view()
	for _, h := range m.Headers {
		if !h.match(v) {
			return false
		}
	}
	if len(m.QueryParameters) > 0 {
		vals, _ := url.ParseQuery(q)
		for _, qp := range m.QueryParameters {
			vs, present := vals[qp.Name]
			switch {
			case qp.PresentMatch:
				if !present {
					return false
				}
			case qp.StringMatch != nil:
				if !present || !qp.StringMatch.match(vs[0]) {
					return false
				}
			}
		}
	}
	return true
}

func parseRouteConfig(raw json.RawMessage) (*routeConfig, error) {
	var rc routeConfig
	if err := decodeStrict(raw, &rc); err != nil {
		return nil, fmt.Errorf("route configuration: %w", err)
	}
	for _, vh := range rc.VirtualHosts {
		for _, r := range vh.Routes {
			if err := r.Match.compile(); err != nil {
				return nil, fmt.Errorf("route configuration %s: %w", rc.Name, err)
			}
		}
	}
	return &rc, nil
}

func (rc *routeConfig) virtualHost(host string) *virtualHost {
	h := strings.ToLower(host)
	if rc.IgnorePortInHostMatching {
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
	}
	var exact, star *virtualHost
	type cand struct {
		vh  *virtualHost
		len int
	}
	var suffix, prefix []cand
	for _, vh := range rc.VirtualHosts {
		for _, d := range vh.Domains {
			d = strings.ToLower(d)
			switch {
			case d == "*":
				if star == nil {
					star = vh
				}
			case strings.HasPrefix(d, "*") && strings.HasSuffix(h, d[1:]) && len(h) > len(d)-1:
				suffix = append(suffix, cand{vh, len(d)})
			case strings.HasSuffix(d, "*") && strings.HasPrefix(h, d[:len(d)-1]) && len(h) > len(d)-1:
				prefix = append(prefix, cand{vh, len(d)})
			case d == h:
				if exact == nil {
					exact = vh
				}
			}
		}
	}
	longest := func(cs []cand) *virtualHost {
		sort.SliceStable(cs, func(i, j int) bool { return cs[i].len > cs[j].len })
		return cs[0].vh
	}
	switch {
	case exact != nil:
		return exact
	case len(suffix) > 0:
		return longest(suffix)
	case len(prefix) > 0:
		return longest(prefix)
	}
	return star
}

func (rc *routeConfig) match(s *stream) *route {
	vh := rc.virtualHost(s.r.Host)
	if vh == nil {
		return nil
	}
	for _, r := range vh.Routes {
		if r.Match.matches(s) {
			return r
		}
	}
	return nil
}
