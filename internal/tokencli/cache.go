package tokencli

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"time"
)

// ErrUnsafeCache is wrapped by the error about a cache file or folder that
// others could read or replace.
var ErrUnsafeCache = errors.New("unsafe token cache")

// entry is one cache file: the tokens of one issuer, client, scopes and
// audiences.
type entry struct {
	Issuer       string    `json:"issuer"`
	ClientID     string    `json:"client_id"`
	IDToken      string    `json:"id_token"`
	RefreshToken string    `json:"refresh_token,omitempty"`
	Expiry       time.Time `json:"expiry"` // of the ID token
	Subject      string    `json:"sub"`
}

// cache is the file of one issuer, client, scopes and audiences.
type cache struct {
	dir, path string
}

// cacheKey names the file: a digest, so that URLs and scopes need no
// escaping and the file name tells nothing about them.
func cacheKey(o Options) string {
	scopes, auds := append([]string{}, o.Scopes...), append([]string{}, o.Audiences...)
	slices.Sort(scopes)
	slices.Sort(auds)
	b, _ := json.Marshal([]any{o.Issuer, o.ClientID, scopes, auds})
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}

// openCache makes sure the cache folder exists, is ours alone to write, and
// names the file of o.
func openCache(o Options) (*cache, error) {
	dir := o.CacheDir
	if dir == "" {
		d, err := defaultCacheDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cannot create the token cache folder: %v (pass another with --cache-dir)", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("token cache folder: %v", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%w: %s is not a folder (remove it or pass --cache-dir)", ErrUnsafeCache, dir)
	}
	// Others who can write the folder can replace the file with theirs.
	if checkModes() && fi.Mode().Perm()&0o022 != 0 {
		return nil, fmt.Errorf("%w: folder %s has mode %04o, writable by others, who could replace your tokens; fix it with: chmod 700 %s",
			ErrUnsafeCache, dir, fi.Mode().Perm(), dir)
	}
	return &cache{dir: dir, path: filepath.Join(dir, cacheKey(o)+".json")}, nil
}

// checkModes is false where Unix permission bits mean nothing.
func checkModes() bool { return runtime.GOOS != "windows" && runtime.GOOS != "plan9" }

// load reads the entry; a missing file is no entry. A file that is not a
// regular file or whose permissions are wider than 0600 is refused.
func (c *cache) load() (*entry, error) {
	fi, err := os.Lstat(c.path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("token cache: %v", err)
	}
	if err := checkFile(c.path, fi); err != nil {
		return nil, err
	}
	f, err := os.Open(c.path)
	if err != nil {
		return nil, fmt.Errorf("token cache: %v", err)
	}
	defer f.Close()
	// The file opened may not be the one inspected: check it again.
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("token cache: %v", err)
	}
	if err := checkFile(c.path, fi); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("token cache: %v", err)
	}
	var e entry
	if err := json.Unmarshal(b, &e); err != nil {
		return nil, fmt.Errorf("token cache %s is damaged (%v): delete it, or run with --force", c.path, err)
	}
	return &e, nil
}

func checkFile(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%w: %s is not a regular file (%s); delete it: rm %s", ErrUnsafeCache, path, fi.Mode().Type(), path)
	}
	if checkModes() && fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o: others on this machine may have read your tokens. "+
			"Fix the mode with: chmod 600 %s (or delete the file and log in again)", ErrUnsafeCache, path, fi.Mode().Perm(), path)
	}
	return nil
}

// save replaces the entry atomically: a reader sees the old file or the new
// one, never a part, and the new one is 0600 from its creation.
func (c *cache) save(e *entry) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(c.dir, ".token-*.tmp")
	if err != nil {
		return fmt.Errorf("writing the token cache: %v", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after the rename
	if err := f.Chmod(0o600); err != nil && checkModes() {
		f.Close()
		return fmt.Errorf("writing the token cache: %v", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing the token cache: %v", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing the token cache: %v", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the token cache: %v", err)
	}
	if err := os.Rename(tmp, c.path); err != nil {
		return fmt.Errorf("writing the token cache: %v", err)
	}
	return nil
}
