// Package groupnames makes the group lists of the tests, benchmarks and
// measured figures about identities with many groups: names of about 40
// bytes shaped like GitLab group paths, the same in every run.
package groupnames

import "fmt"

// List is n group names of about 40 bytes (39 on average, 40 with the
// comma that joins them) shaped like GitLab group paths (organisation,
// department, team, project; drawn from a fixed vocabulary with a fixed
// seed), beginning with Kubeflow, the ones Filter keeps.
func List(n int) []string {
	words := []string{"platform", "research", "data", "infra", "security", "mobile", "payments", "search", "ads", "growth",
		"analytics", "devtools", "identity", "storage", "network", "compute", "billing", "support", "design", "legal",
		"finance", "sales", "marketing", "ops", "vision", "speech", "robotics", "health", "maps", "music"}
	out := append([]string{}, Kubeflow...)
	x := uint32(2463534242)
	next := func(k int) int { x ^= x << 13; x ^= x >> 17; x ^= x << 5; return int(x % uint32(k)) }
	for len(out) < n {
		out = append(out, fmt.Sprintf("acme/%s-%s/%s-%03d/proj-%02d", words[next(len(words))], words[next(len(words))],
			words[next(len(words))], next(1000), next(100)))
	}
	return out[:n]
}

// Kubeflow are the groups of List that the documented filter keeps: the
// administrators and two teams.
var Kubeflow = []string{"acme/kubeflow/admins", "acme/kubeflow/team-ml", "acme/kubeflow/team-data"}

// Filter is the documented GROUPS_FILTER for List.
const Filter = `^acme/kubeflow(/|$)`
