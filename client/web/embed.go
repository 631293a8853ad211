// Package web serves feedgate's browser dashboard: the Vite build in dist,
// embedded at compile time, so the server needs no npm at run time.
//
// Rebuild dist with `npm ci && npm run build` in this directory after
// changing src/ or the generated TypeScript in gen/ts, and commit it;
// check-dist.sh fails when the committed dist is stale.
package web

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed all:dist
var dist embed.FS

// ContentSecurityPolicy is sent with every response: the dashboard loads
// only its own scripts and styles and talks only to its own origin (the
// gateway's Connect API). Broker logins are top-level navigations, which
// CSP does not restrict.
const ContentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; " +
	"connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

const (
	cacheImmutable = "public, max-age=31536000, immutable" // content-hashed names under assets/
	cacheShort     = "public, max-age=3600"                // other static files (favicon)
	cacheNone      = "no-cache"                            // index.html: always revalidate
)

type file struct {
	body  []byte
	etag  string
	ctype string
	cache string
}

// Handler serves the dashboard: index.html for "/" (and for any path
// without a file extension, so deep links work), the static files of dist
// with long cache lifetimes for the content-hashed assets, and security
// headers on every response. Only GET and HEAD are allowed.
func Handler() http.Handler {
	files, err := load()
	if err != nil {
		panic("web: embedded dist unreadable: " + err.Error())
	}
	index, hasIndex := files["index.html"]
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", ContentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("X-Frame-Options", "DENY")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			h.Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		name := strings.TrimPrefix(path.Clean("/"+r.URL.Path), "/")
		f, ok := files[name]
		switch {
		case ok && name != "index.html":
		case name == "" || name == "index.html" || !strings.Contains(path.Base(name), "."):
			if !hasIndex {
				http.Error(w, "dashboard not built", http.StatusNotFound)
				return
			}
			f = index
		default:
			h.Set("Cache-Control", cacheNone)
			http.NotFound(w, r)
			return
		}
		h.Set("Content-Type", f.ctype)
		h.Set("Cache-Control", f.cache)
		h.Set("ETag", f.etag)
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
	})
}

func load() (map[string]file, error) {
	sub, err := fs.Sub(dist, "dist")
	if err != nil {
		return nil, err
	}
	files := map[string]file{}
	err = fs.WalkDir(sub, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(sub, p)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		ctype := mime.TypeByExtension(path.Ext(p))
		if ctype == "" {
			ctype = http.DetectContentType(body)
		}
		cache := cacheShort
		switch {
		case p == "index.html":
			cache = cacheNone
		case strings.HasPrefix(p, "assets/"):
			cache = cacheImmutable
		}
		files[p] = file{body: body, etag: `"` + hex.EncodeToString(sum[:12]) + `"`, ctype: ctype, cache: cache}
		return nil
	})
	return files, err
}
