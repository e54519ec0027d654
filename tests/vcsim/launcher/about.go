package main

// The API version vCenter announces. vcsim 0.24 says 6.5, which has no pull
// mode (HttpNfcLeasePullFromUrls_Task and HttpNfcLease.capabilities are 6.7's),
// so a client that honours the version it is told never sends them. The
// api_version switch rewrites about.apiVersion in RetrieveServiceContent's
// answer, for the sessions that log in after it is set; vcsim itself accepts
// any version's calls.

import (
	"bytes"
	"flag"
	"net/http"
	"net/http/httptest"
	"regexp"
)

var aboutAPIVersion = regexp.MustCompile(`<apiVersion>[^<]*</apiVersion>`)

// aboutFlags registers the announced version's flag.
func aboutFlags(b *behaviour) {
	flag.StringVar(&b.APIVersion, "api-version", "",
		"the API version RetrieveServiceContent announces (empty: vcsim's own, 6.5)")
}

// serveServiceContent answers RetrieveServiceContent, with the behaviour's
// API version when one is set (false: vcsim alone answers).
func (h *harness) serveServiceContent(w *httptest.ResponseRecorder, r *http.Request) bool {
	h.mu.Lock()
	version := h.behaviour.APIVersion
	h.mu.Unlock()
	if version == "" {
		return false
	}
	h.inner.ServeHTTP(w, r)
	if w.Code == http.StatusOK {
		body := aboutAPIVersion.ReplaceAll(w.Body.Bytes(),
			[]byte("<apiVersion>"+xmlEscape(version)+"</apiVersion>"))
		w.Body = bytes.NewBuffer(body)
	}
	return true
}
