package config

import (
	"slices"
	"testing"
)

// TestProviderIDTokenAudiences: the audiences of accepted provider ID tokens
// default to CLIENT_ID and otherwise are exactly the configured list.
func TestProviderIDTokenAudiences(t *testing.T) {
	for _, c := range []struct {
		value string
		want  []string
	}{
		{"", []string{"kubeflow-oidc-authservice"}},
		{"kubeflow-oidc-authservice,kubeflow-cli", []string{"kubeflow-oidc-authservice", "kubeflow-cli"}},
		{" kubeflow-cli , other ", []string{"kubeflow-cli", "other"}},
	} {
		s, err := Load(FromMap(setenv(t, map[string]string{"PROVIDER_ID_TOKEN_AUDIENCES": c.value})))
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(s.Bearer.ProviderTokenAudiences, c.want) {
			t.Errorf("PROVIDER_ID_TOKEN_AUDIENCES=%q: %q, want %q", c.value, s.Bearer.ProviderTokenAudiences, c.want)
		}
	}
}
