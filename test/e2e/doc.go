// Package e2e runs the end-to-end scenarios against real programs: headless
// Chromium (Debian's package, driven with chromedp), Dex, the GitLab-shaped
// node-oidc-provider, several replicas, Caddy and nginx. Run with
// `make e2e` (go test -tags e2e ./test/e2e/...). A failed browser scenario
// leaves a screenshot and the service's log in test/artifacts/<test>/.
package e2e
