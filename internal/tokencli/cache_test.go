package tokencli

import (
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

func testCache(t *testing.T) (*cache, Options) {
	t.Helper()
	o := Options{Issuer: "https://kubeflow.example.com/dex", ClientID: "kubeflow-cli", CacheDir: filepath.Join(t.TempDir(), "tokens")}
	c, err := openCache(o)
	if err != nil {
		t.Fatal(err)
	}
	return c, o
}

func TestCacheFileIs0600AndReplacedAtomically(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	c, _ := testCache(t)
	if fi, err := os.Stat(c.dir); err != nil || fi.Mode().Perm() != 0o700 {
		t.Fatalf("cache folder mode %v (%v), want 0700", fi.Mode().Perm(), err)
	}
	e := &entry{Issuer: "i", ClientID: "c", IDToken: "a.b.c", RefreshToken: "r", Expiry: time.Unix(2000000000, 0).UTC(), Subject: "s"}
	for i := 0; i < 2; i++ { // create, then replace
		if err := c.save(e); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(c.path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("cache file mode %v (%v), want 0600", fi.Mode().Perm(), err)
		}
	}
	got, err := c.load()
	if err != nil || *got != *e {
		t.Fatalf("load: %+v, %v", got, err)
	}
	left, _ := filepath.Glob(filepath.Join(c.dir, ".token-*"))
	if len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	// A umask that would make new files world-readable changes nothing.
	os.Remove(c.path)
	if err := c.save(e); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(c.path); fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v", fi.Mode().Perm())
	}
}

func TestCacheRefusesWiderPermissions(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	c, _ := testCache(t)
	if err := c.save(&entry{IDToken: "secret.token.value"}); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o644, 0o640, 0o604, 0o660, 0o606, 0o666, 0o601, 0o610} {
		os.Chmod(c.path, mode)
		e, err := c.load()
		if !errors.Is(err, ErrUnsafeCache) || e != nil {
			t.Fatalf("mode %04o: %v, %v", mode, e, err)
		}
		if !strings.Contains(err.Error(), "chmod 600 "+c.path) || strings.Contains(err.Error(), "secret.token.value") {
			t.Fatalf("mode %04o: %v", mode, err)
		}
	}
	// The owner's bits alone do not matter.
	for _, mode := range []os.FileMode{0o400, 0o600, 0o700} {
		os.Chmod(c.path, mode)
		if e, err := c.load(); err != nil || e.IDToken != "secret.token.value" {
			t.Fatalf("%04o: %v, %v", mode, e, err)
		}
	}
}

func TestCacheRefusesWhatIsNotAFile(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	c, _ := testCache(t)
	other := filepath.Join(t.TempDir(), "elsewhere.json")
	os.WriteFile(other, []byte(`{"id_token":"planted"}`), 0o600)
	if err := os.Symlink(other, c.path); err != nil {
		t.Fatal(err)
	}
	if _, err := c.load(); !errors.Is(err, ErrUnsafeCache) || !strings.Contains(err.Error(), "not a regular file") {
		t.Fatalf("symlink: %v", err)
	}
	os.Remove(c.path)
	os.Mkdir(c.path, 0o700)
	if _, err := c.load(); !errors.Is(err, ErrUnsafeCache) {
		t.Fatalf("folder: %v", err)
	}
}

func TestCacheFolderWritableByOthersIsRefused(t *testing.T) {
	if runtime.GOOS == "windows" {
		t.Skip("no Unix permissions")
	}
	dir := filepath.Join(t.TempDir(), "tokens")
	os.Mkdir(dir, 0o700)
	os.Chmod(dir, 0o777)
	_, err := openCache(Options{Issuer: "https://i", ClientID: "c", CacheDir: dir})
	if !errors.Is(err, ErrUnsafeCache) || !strings.Contains(err.Error(), "chmod 700 "+dir) {
		t.Fatalf("%v", err)
	}
	os.Chmod(dir, 0o755) // readable is fine: the files are 0600
	if _, err := openCache(Options{Issuer: "https://i", ClientID: "c", CacheDir: dir}); err != nil {
		t.Fatal(err)
	}
}

func TestCacheDamagedFileSaysWhatToDo(t *testing.T) {
	c, _ := testCache(t)
	os.WriteFile(c.path, []byte("{not json"), 0o600)
	if _, err := c.load(); err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("%v", err)
	}
}

func TestCacheKey(t *testing.T) {
	base := Options{Issuer: "https://i", ClientID: "c", Scopes: []string{"openid", "email"}, Audiences: []string{"a", "b"}}
	same := base
	same.Scopes, same.Audiences = []string{"email", "openid"}, []string{"b", "a"}
	if cacheKey(base) != cacheKey(same) {
		t.Error("order of scopes or audiences changes the key")
	}
	for _, o := range []Options{
		{Issuer: "https://other", ClientID: "c", Scopes: base.Scopes, Audiences: base.Audiences},
		{Issuer: "https://i", ClientID: "other", Scopes: base.Scopes, Audiences: base.Audiences},
		{Issuer: "https://i", ClientID: "c", Scopes: []string{"openid"}, Audiences: base.Audiences},
		{Issuer: "https://i", ClientID: "c", Scopes: base.Scopes},
	} {
		if cacheKey(o) == cacheKey(base) {
			t.Errorf("%+v shares the key of %+v", o, base)
		}
	}
}
