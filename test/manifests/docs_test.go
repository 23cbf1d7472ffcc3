package manifests

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// variables is what docs/configuration.md says about the environment.
type variables struct {
	Known    map[string]string // name -> default ("" when none)
	Obsolete map[string]bool   // accepted and ignored: must not be set here
}

var (
	varsOnce sync.Once
	vars     variables
	varsErr  error
)

var (
	tableRow    = regexp.MustCompile("^\\| `([A-Z0-9_]+)` \\| ([^|]*) \\|")
	backticked  = regexp.MustCompile("`([A-Z0-9_]+)`")
	defaultCell = regexp.MustCompile("^`(.*)`$")
)

// loadVariables reads the table of docs/configuration.md (first column: the
// variable, second: its default) and its list of obsolete variables.
func loadVariables() (variables, error) {
	varsOnce.Do(func() {
		b, err := os.ReadFile(filepath.Join(repoRoot, "docs", "configuration.md"))
		if err != nil {
			varsErr = err
			return
		}
		vars = variables{Known: map[string]string{}, Obsolete: map[string]bool{}}
		for _, line := range strings.Split(string(b), "\n") {
			if m := tableRow.FindStringSubmatch(line); m != nil {
				def := ""
				if d := defaultCell.FindStringSubmatch(strings.TrimSpace(m[2])); d != nil {
					def = d[1]
				}
				vars.Known[m[1]] = def
			}
			if strings.HasPrefix(line, "Obsolete variables") {
				for _, m := range backticked.FindAllStringSubmatch(line, -1) {
					vars.Obsolete[m[1]] = true
				}
			}
		}
	})
	return vars, varsErr
}

// knownVariable: a variable of the table, or TEMPLATE_CONTEXT_<KEY>.
func (v variables) knownVariable(name string) bool {
	if _, ok := v.Known[name]; ok {
		return true
	}
	return strings.HasPrefix(name, "TEMPLATE_CONTEXT_") && len(name) > len("TEMPLATE_CONTEXT_")
}
