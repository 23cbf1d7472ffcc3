// Package monitoring holds the dashboard and the alerts of
// deploy/components/monitoring to the service as it runs (its own module:
// the PromQL parser of github.com/prometheus/prometheus stays out of the
// product's go.mod).
//
//   - dashboard_test.go: the Grafana dashboard's structure, its data-source
//     and template variables, unique panel ids, every query parsed;
//   - rules_test.go: `promtool check rules` and `promtool test rules` on the
//     PrometheusRule's spec, a unit test for each alert, each alert's
//     runbook and each panel described in docs/operations.md;
//   - live_test.go: the service with real Dex, Redis and traffic: every
//     series a panel or a rule queries is on /metrics with the labels the
//     query uses, and a real Prometheus server scraping the service
//     evaluates every panel query and every rule.
package monitoring
