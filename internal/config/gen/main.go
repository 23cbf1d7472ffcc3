// Command gen prints docs/configuration.md from the configuration struct:
// go run ./internal/config/gen > docs/configuration.md
package main

import (
	"fmt"

	"github.com/oidc-authservice/oidc-authservice/internal/config"
)

func main() { fmt.Print(config.Document()) }
