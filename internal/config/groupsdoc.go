package config

// groupsDoc is the section of docs/configuration.md on groups: the filter's
// syntax with GitLab and Dex examples, and the limits per front end (the
// figures are measured by test/e2e's TestGroupsThroughFrontEnds).
const groupsDoc = `
## Groups: filter and limits

Every identity's groups go through the same steps wherever they enter — a login (the ID
token merged with userinfo), a session sealed under other settings (filtered again when it
is opened, so a new filter takes effect without a new login), a bearer token of any issuer
(` + "`AUTHENTICATION_CONFIG_FILE`" + `, the provider's ID tokens), a TokenReview answer:

1. names that cannot travel in a header are left out (empty, a comma, a control character,
   invalid UTF-8, over 512 bytes);
2. only the groups ` + "`GROUPS_FILTER`" + ` or ` + "`GROUPS_FILTER_PREFIXES`" + ` keep stay (neither set: all);
3. at most ` + "`GROUPS_MAX`" + ` groups, joined with commas at most as long as one header line of
   ` + "`UPSTREAM_HEADER_MAX_BYTES`" + ` allows (8,171 bytes for ` + "`kubeflow-groups`" + ` by default, less with
   ` + "`UPSTREAM_TOKEN=issued`" + `, whose token carries them twice: 2,140 bytes, counted as its JSON writes them,
   ` + "`\"`" + ` and ` + "`\\`" + ` 2 bytes each, U+2028 and U+2029 6); beyond that the identity is refused
   (` + "`GROUPS_OVERFLOW=refuse`" + `: a login gets a page, an API client JSON ` + "`identity_too_large`" + `, both
   with the counts and these settings) or the first groups that fit are kept
   (` + "`GROUPS_OVERFLOW=truncate`" + `). Either way ` + "`oidc_authservice_identity_limits_total`" + ` counts it
   and one log line gives the counts, never the names.

Only then do ` + "`GROUPS_ALLOWLIST`" + ` and the rules see the groups; a group either names that the
filter removes stops the service at start (nobody could ever match it). Validation rules of
` + "`AUTHENTICATION_CONFIG_FILE`" + ` (` + "`claimValidationRules`, `userValidationRules`" + `) run before, on every
group of the token.

` + "`GROUPS_FILTER`" + ` is an RE2 regular expression searched in each name, as ` + "`grep`" + ` does: anchor it.
Names are compared as forwarded, after an issuer's ` + "`claimMappings`" + ` prefix (` + "`gitlab:acme`" + `).

**GitLab** (groups in userinfo are full paths, direct and inherited): keep the groups that
map to Kubeflow profiles and rules,

` + "```sh" + `
GROUPS_FILTER=^acme/(ml|data-science)(/|$)      # acme/ml, acme/ml/vision, acme/data-science/...
GROUPS_FILTER_PREFIXES=kubeflow-                 # and every kubeflow-* group
# CI jobs' tokens mapped with prefix gitlab: (docs/machine-identities.md) need their own:
# GROUPS_FILTER=^(gitlab:)?acme/(ml|data-science)(/|$)
` + "```" + `

**Dex** (groups of its connectors, e.g. LDAP or GitHub ` + "`org:team`" + `; in the ID token with the
` + "`groups`" + ` scope):

` + "```sh" + `
GROUPS_FILTER=^(kubeflow-.*|acme:(ml|platform))$
` + "```" + `

Dex puts every group into the ID token whatever the filter (the filter is this service's),
so with ` + "`UPSTREAM_TOKEN=id_token`" + ` a user in hundreds of groups is refused with a page naming
` + "`UPSTREAM_TOKEN=issued`" + `, whose token carries only the kept groups; better, have Dex's connector
return fewer groups.

What fits, with the defaults, for groups of about 40 bytes (measured through real front ends
by ` + "`make e2e`" + `; [operations.md](operations.md) has the full table):

| front end | its limit | what fits (groups of 40 bytes) | beyond |
|---|---|---|---|
| gunicorn upstream (Kubeflow's web apps) | 8,190 bytes per header line | about 200 groups: ` + "`kubeflow-groups`" + ` of 8,171 bytes (` + "`UPSTREAM_HEADER_MAX_BYTES=8190`" + `) | the service's page |
| nginx as the upstream | ` + "`large_client_header_buffers 4 8k`" + `: 8 KB per line | the same | the service's page |
| Envoy / Istio ingress gateway | 60 KiB of request headers | the same; the session in 1 cookie (3.3 KB at 200 groups), at most ` + "`SESSION_MAX_COOKIES=2`" + ` | the service's page |
| nginx forward auth (` + "`auth_request`" + `) | ` + "`proxy_buffer_size`" + `, 4 KB, for the verify, start and callback answers | about 45 groups (` + "`FORWARD_AUTH_ANSWER_MAX_BYTES=4096`" + `) | the service's page at the login, or when a renewal outgrows it |
| browsers | 4,096 bytes per cookie | 3,800 bytes of session per cookie | — |

With the documented filter a user in 5,000 groups works through all of them.
`
