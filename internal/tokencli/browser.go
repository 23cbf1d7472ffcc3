package tokencli

import (
	"errors"
	"os/exec"
	"runtime"
	"strings"
)

// openBrowser opens u with $BROWSER or the system's opener. On Linux
// without a display it does not try: xdg-open would start a text browser
// in the terminal the user is reading the URL from.
func openBrowser(u string, getenv func(string) string) error {
	var cmd *exec.Cmd
	switch b := getenv("BROWSER"); {
	case b != "":
		// BROWSER may hold a list (a:b); the first is used.
		first := strings.Split(b, ":")[0]
		cmd = exec.Command(first, u)
	case runtime.GOOS == "darwin":
		cmd = exec.Command("open", u)
	case runtime.GOOS == "windows":
		cmd = exec.Command("rundll32", "url.dll,FileProtocolHandler", u)
	default:
		if getenv("DISPLAY") == "" && getenv("WAYLAND_DISPLAY") == "" {
			return errors.New("no display")
		}
		cmd = exec.Command("xdg-open", u)
	}
	// Nothing of the browser reaches our stdout, which carries the token.
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, nil, nil
	if err := cmd.Start(); err != nil {
		return err
	}
	go cmd.Wait()
	return nil
}
