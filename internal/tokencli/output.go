package tokencli

import (
	"encoding/json"
	"fmt"
	"time"
)

// Versions of client.authentication.k8s.io whose ExecCredential this
// command writes.
const (
	execV1      = "client.authentication.k8s.io/v1"
	execV1beta1 = "client.authentication.k8s.io/v1beta1"
)

// execCredential is the part of Kubernetes' client.authentication.k8s.io
// ExecCredential this command reads (spec, from KUBERNETES_EXEC_INFO) and
// writes (status).
type execCredential struct {
	APIVersion string                `json:"apiVersion"`
	Kind       string                `json:"kind"`
	Spec       *execCredentialSpec   `json:"spec,omitempty"`
	Status     *execCredentialStatus `json:"status,omitempty"`
}

// execCredentialSpec is what client-go tells the plugin.
type execCredentialSpec struct {
	Interactive bool `json:"interactive"`
}

// execCredentialStatus is the credential.
type execCredentialStatus struct {
	ExpirationTimestamp string `json:"expirationTimestamp,omitempty"`
	Token               string `json:"token"`
}

// print writes the token in the --output form on stdout, the only place a
// token is written to besides the cache.
func (c *command) print(e *entry) error {
	var out []byte
	switch c.o.Output {
	case "exec-credential":
		version, err := c.execVersion()
		if err != nil {
			return err
		}
		out, _ = json.Marshal(execCredential{APIVersion: version, Kind: "ExecCredential",
			Status: &execCredentialStatus{Token: e.IDToken, ExpirationTimestamp: e.Expiry.UTC().Format(time.RFC3339)}})
	case "json":
		out, _ = json.Marshal(struct {
			IDToken  string    `json:"id_token"`
			Expiry   time.Time `json:"expiry"`
			Issuer   string    `json:"issuer"`
			ClientID string    `json:"client_id"`
		}{e.IDToken, e.Expiry.UTC(), e.Issuer, e.ClientID})
	default:
		out = []byte(e.IDToken)
	}
	_, err := fmt.Fprintf(c.env.Stdout, "%s\n", out)
	return err
}

// execVersion is the ExecCredential version client-go asked for in
// KUBERNETES_EXEC_INFO, v1 without it.
func (c *command) execVersion() (string, error) {
	info := c.env.Getenv("KUBERNETES_EXEC_INFO")
	if info == "" {
		return execV1, nil
	}
	var in execCredential
	if err := json.Unmarshal([]byte(info), &in); err != nil {
		return "", fmt.Errorf("KUBERNETES_EXEC_INFO is not an ExecCredential: %v", err)
	}
	switch in.APIVersion {
	case execV1, execV1beta1:
		return in.APIVersion, nil
	}
	return "", fmt.Errorf("KUBERNETES_EXEC_INFO asks for %q: set apiVersion: %s in the kubeconfig's exec section", in.APIVersion, execV1)
}
