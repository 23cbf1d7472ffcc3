// Package config owns the service's configuration: the environment
// variables (the predecessor's names and defaults, plus new ones), their
// validation, which reports every problem at once, and their documentation,
// generated from the struct tags so that --help, docs/configuration.md and
// the code cannot drift apart.
//
// Secrets (CLIENT_SECRET, SESSION_KEYS) are never printed: Settings.String
// and Settings.Redacted replace them.
package config
