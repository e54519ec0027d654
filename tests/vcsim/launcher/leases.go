package main

// Lease and session faults that vcsim does not have but real vCenter does:
// leases that stay "initializing", go to "error" mid-upload, or expire when
// the client reports no progress; sessions that expire. The middleware applies
// them by rewriting vcsim's SOAP answers, so the simulator itself is unchanged.

import (
	"bytes"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// leaseRule makes the next Times leases (0: all) misbehave; with VM, only leases
// importing the VM of that name; with Probability, each such lease with that chance.
type leaseRule struct {
	Times              int     `json:"times"`
	VM                 string  `json:"vm"`
	Probability        float64 `json:"probability"`
	InitializingReads  int     `json:"initializing_reads"`   // "initializing" for the first N reads
	ErrorAfterBytes    int64   `json:"error_after_bytes"`    // go to error after N NFC bytes (0: off)
	ErrorFault         string  `json:"error_fault"`          // fault type for error (default FileFault)
	ExpireAfterSeconds float64 `json:"expire_after_seconds"` // error after T s without progress
	DeviceHost         string  `json:"device_host"`          // device URLs name this host
	Thumbprint         string  `json:"thumbprint"`           // "match" or "mismatch"
	applied            int
}

// leaseTrack is what the harness knows about one lease vcsim created.
type leaseTrack struct {
	id           string
	vm           string     // the name of the VM it imports
	session      string     // the cookie of the session that created it
	rule         *leaseRule // a copy, or nil
	reads        int
	nfcBytes     int64
	lastProgress time.Time
	errorFault   string // set once the lease is in error
	errorMessage string
	entity       string // the VM it imports (its MOR value), as vcsim says
	// the launcher started deleting its VM (aborted or timed out)
	deleteStarted bool
	deleted       chan struct{} // closed once the deletion ended
	timedOut      bool
}

var (
	leaseReturn = regexp.MustCompile(`<returnval type="HttpNfcLease">([^<]+)</returnval>`)
	leaseObject = regexp.MustCompile(`<(?:obj|_this)[^>]*type="HttpNfcLease"[^>]*>([^<]+)<`)
	leaseState  = regexp.MustCompile(`(XMLSchema-instance:type="HttpNfcLeaseState">)ready(</val>)`)
	leaseTime   = regexp.MustCompile(`<leaseTimeout>\d+</leaseTimeout>`)
	cookieValue = regexp.MustCompile(`vmware_soap_session="?([^";]+)"?`)
	// ImportVApp's spec: the VM's name is the first <name> of its configSpec.
	importName = regexp.MustCompile(`(?s)<configSpec>.*?<name>([^<]*)</name>`)
)

func xmlEscape(text string) string {
	var b bytes.Buffer
	_ = xmlEscapeTo(&b, text)
	return b.String()
}

func xmlEscapeTo(b *bytes.Buffer, text string) error {
	r := strings.NewReplacer("&", "&amp;", "<", "&lt;", ">", "&gt;", `"`, "&quot;")
	_, err := b.WriteString(r.Replace(text))
	return err
}

// expiredLocked reports whether the lease is (now) in error. A lease that got
// no progress within its timeout goes to error, and vCenter then deletes its
// VM; the caller holds h.mu.
func (h *harness) expiredLocked(l *leaseTrack, now time.Time) bool {
	if l.errorFault != "" {
		return true
	}
	if timeout := h.leaseTimeout(l); timeout > 0 && now.Sub(l.lastProgress).Seconds() > timeout {
		l.errorFault = "Timedout"
		l.errorMessage = fmt.Sprintf("lease timed out: no progress for %.1f s", timeout)
		l.timedOut = true
		h.leasesTimedOut++
		h.deleteVMLocked(l)
	}
	return l.errorFault != ""
}

// leaseFor returns the tracked lease a request body names, if any; caller holds h.mu.
func (h *harness) leaseFor(body []byte) *leaseTrack {
	match := leaseObject.FindSubmatch(body)
	if match == nil {
		return nil
	}
	return h.leases[string(match[1])]
}

// nfcLease returns the tracked lease of an NFC upload path /nfc/<lease>/<file>.
func (h *harness) nfcLease(path string) *leaseTrack {
	parts := strings.Split(path, "/")
	if len(parts) < 3 {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.leases[parts[len(parts)-2]]
}

// beforeSOAP may answer a call itself (true) because of lease or session state.
func (h *harness) beforeSOAP(method string, body []byte, w http.ResponseWriter,
	r *http.Request) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if cookie := cookieValue.FindStringSubmatch(r.Header.Get("Cookie")); cookie != nil {
		if h.expiredSessions[cookie[1]] && method != "Login" {
			h.countLocked(method, true)
			writeFault(w, "NotAuthenticated")
			return true
		}
	}
	lease := h.leaseFor(body)
	if lease == nil {
		return false
	}
	now := h.now()
	switch method {
	case "HttpNfcLeaseProgress":
		if h.expiredLocked(lease, now) {
			h.countLocked(method, true)
			writeFault(w, "InvalidState")
			return true
		}
		lease.lastProgress = now
	case "HttpNfcLeaseComplete":
		if h.expiredLocked(lease, now) {
			h.countLocked(method, true)
			writeFault(w, "InvalidState")
			return true
		}
	}
	return false
}

// afterSOAP rewrites vcsim's answer where a lease rule says so, and tracks
// leases and sessions; it returns the body to send.
func (h *harness) afterSOAP(method string, request []byte, response *httptest.ResponseRecorder,
	r *http.Request, entity string) []byte {
	body := response.Body.Bytes()
	ok := response.Code == http.StatusOK
	h.mu.Lock()
	defer h.mu.Unlock()
	switch {
	case method == "ImportVApp" && ok:
		if match := leaseReturn.FindSubmatch(body); match != nil {
			lease := &leaseTrack{id: string(match[1]), lastProgress: h.now(), entity: entity}
			if name := importName.FindSubmatch(request); name != nil {
				lease.vm = html.UnescapeString(string(name[1]))
			}
			if cookie := cookieValue.FindStringSubmatch(r.Header.Get("Cookie")); cookie != nil {
				lease.session = cookie[1]
			}
			if rule := h.faults.Lease; rule != nil && (rule.Times == 0 || rule.applied < rule.Times) &&
				(rule.VM == "" || rule.VM == lease.vm) &&
				(rule.Probability == 0 || h.rng.Float64() < rule.Probability) {
				rule.applied++
				copy := *rule
				lease.rule = &copy
			}
			h.leases[lease.id] = lease
			if h.expiredSessions[lease.session] {
				// The session expired while ImportVApp was under way: the lease
				// ended with it, as expireSessions ends the ones it finds.
				h.leasesEndedByServer++
				h.deleteVMLocked(lease)
			} else {
				h.leasesOpen[lease.id] = true
			}
		}
	case (method == "HttpNfcLeaseComplete" || method == "HttpNfcLeaseAbort") && ok:
		if lease := h.leaseFor(request); lease != nil {
			delete(h.leasesOpen, lease.id)
			h.stopPullsLocked(lease) // pull.go
			if method == "HttpNfcLeaseAbort" {
				h.deleteVMLocked(lease)
			}
		}
	case method == "Login" && ok:
		for _, header := range response.Header()["Set-Cookie"] {
			if cookie := cookieValue.FindStringSubmatch(header); cookie != nil {
				h.liveSessions[cookie[1]] = true
				h.lastActive[cookie[1]] = h.now()
				if len(h.liveSessions) > h.sessionsPeak {
					h.sessionsPeak = len(h.liveSessions)
				}
			}
		}
	case method == "Logout" && ok:
		if cookie := cookieValue.FindStringSubmatch(r.Header.Get("Cookie")); cookie != nil {
			delete(h.liveSessions, cookie[1])
			delete(h.lastActive, cookie[1])
			h.leasesEndedByLogout += h.endLeasesOfLocked(cookie[1])
		}
	case method == "RetrievePropertiesEx" && ok:
		lease := h.leaseFor(request)
		if lease == nil {
			return body
		}
		body = h.pullCapabilitiesLocked(body) // pull.go
		if timeout := int(h.leaseTimeout(lease) + 0.5); timeout > 0 {
			if timeout < 1 {
				timeout = 1
			}
			body = leaseTime.ReplaceAll(body, []byte("<leaseTimeout>"+strconv.Itoa(timeout)+
				"</leaseTimeout>"))
		}
		if h.expiredLocked(lease, h.now()) {
			body = leaseState.ReplaceAll(body, []byte("${1}error${2}"))
			body = bytes.Replace(body, []byte("</objects>"), []byte(leaseErrorProp(lease)+
				"</objects>"), 1)
			return body
		}
		if lease.rule == nil {
			return body
		}
		lease.reads++
		if lease.rule.DeviceHost != "" {
			body = bytes.ReplaceAll(body, []byte("<url>https://*/"),
				[]byte("<url>https://"+lease.rule.DeviceHost+"/"))
		}
		switch lease.rule.Thumbprint {
		case "match":
			body = bytes.ReplaceAll(body, []byte("<sslThumbprint></sslThumbprint>"),
				[]byte("<sslThumbprint>"+h.thumbprint+"</sslThumbprint>"))
		case "mismatch":
			body = bytes.ReplaceAll(body, []byte("<sslThumbprint></sslThumbprint>"),
				[]byte("<sslThumbprint>"+strings.Repeat("AB:", 19)+"AB</sslThumbprint>"))
		}
		if lease.reads <= lease.rule.InitializingReads {
			body = leaseState.ReplaceAll(body, []byte("${1}initializing${2}"))
		}
	}
	return body
}

// leaseErrorProp is the lease's "error" property (a LocalizedMethodFault).
func leaseErrorProp(lease *leaseTrack) string {
	return `<propSet><name>error</name><val xmlns:XMLSchema-instance=` +
		`"http://www.w3.org/2001/XMLSchema-instance" XMLSchema-instance:type=` +
		`"LocalizedMethodFault"><fault XMLSchema-instance:type="` + lease.errorFault +
		`"></fault><localizedMessage>` + xmlEscape(lease.errorMessage) +
		`</localizedMessage></val></propSet>`
}

// nfcBytes records upload bytes for a lease and moves it to error past its limit.
func (h *harness) leaseBytes(lease *leaseTrack, n int) (inError bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	lease.nfcBytes += int64(n)
	if lease.rule != nil && lease.rule.ErrorAfterBytes > 0 &&
		lease.nfcBytes >= lease.rule.ErrorAfterBytes && lease.errorFault == "" {
		lease.errorFault = lease.rule.ErrorFault
		if lease.errorFault == "" {
			lease.errorFault = "FileFault"
		}
		lease.errorMessage = fmt.Sprintf("injected %s after %d bytes", lease.errorFault,
			lease.rule.ErrorAfterBytes)
	}
	return h.expiredLocked(lease, h.now())
}

// expireSessions makes every session logged in now answer NotAuthenticated.
func (h *harness) expireSessions() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	count := 0
	for cookie := range h.liveSessions {
		h.endSessionLocked(cookie)
		count++
	}
	return count
}

// expireSession ends the session a request came with, as vCenter's own expiry
// would: it answers NotAuthenticated from now on and its leases end with it.
func (h *harness) expireSession(r *http.Request) {
	cookie := cookieValue.FindStringSubmatch(r.Header.Get("Cookie"))
	if cookie == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.endSessionLocked(cookie[1])
}

// endLeasesOfLocked ends the open leases a session created, because the session
// ended (Logout or expiry), and says how many. vCenter scopes an HttpNfcLease to its session (the
// lease's id reads "session[…]…") and ends it with the session; vcsim keeps
// leases in the session's own registry, so they are gone for anyone else too.
func (h *harness) endLeasesOfLocked(cookie string) int {
	ended := 0
	for id := range h.leasesOpen {
		if lease := h.leases[id]; lease != nil && lease.session == cookie {
			delete(h.leasesOpen, id)
			h.deleteVMLocked(lease) // the import failed with its lease
			ended++
		}
	}
	return ended
}

// leaseReader fails an NFC upload once its lease goes to error, as ESXi drops
// the transfer of an aborted or failed lease.
type leaseReader struct {
	io.ReadCloser
	h     *harness
	lease *leaseTrack
}

func (l *leaseReader) Read(p []byte) (int, error) {
	n, err := l.ReadCloser.Read(p)
	if l.h.leaseBytes(l.lease, n) {
		return n, fmt.Errorf("lease %s is in error", l.lease.id)
	}
	return n, err
}
