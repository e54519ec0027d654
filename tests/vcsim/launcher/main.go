// Command vcsim-launcher runs govmomi's vCenter simulator for asyncovf's tests.
//
// It serves the simulator over TLS on a loopback port, prints one JSON line
// (URL, credentials, CA file), counts every SOAP method and NFC upload for the
// tests to assert on (GET /_harness/counters, POST /_harness/reset), injects
// faults (POST /_harness/faults, leases.go), acts as vCenter does on its own
// where vcsim does not (vcenter.go: deletions, lease timeouts, a session cap,
// idle sessions; POST /_harness/behaviour, /_harness/clock), runs clone tasks
// as vCenter does, with CancelTask (clones.go), caps total NFC intake
// (intake.go), has ESXi's pull mode (pull.go), and exits cleanly on SIGTERM
// or SIGINT.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"encoding/xml"
	"flag"
	"fmt"
	"io"
	"io/ioutil"
	"log"
	"math/big"
	mrand "math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/vmware/govmomi/simulator"
)

const (
	username = "asyncovf"
	password = "vcsim-Passw0rd"
)

// methodCount is what the tests read per SOAP method.
type methodCount struct {
	Started int `json:"started"` // requests that arrived (counted before any delay)
	Calls   int `json:"calls"`   // requests answered (or dropped)
	Faults  int `json:"faults"`  // answered with a fault, or dropped before vcsim saw them
	Delayed int `json:"delayed"` // answered late by a delay rule
	Dropped int `json:"dropped"` // connection closed mid-answer by a drop rule
}

// nfcRule makes NFC uploads misbehave, for the first Times matching uploads (0: all).
// An upload matches if its lease imports the VM named VM (empty: any), and then
// with Probability (0: always).
type nfcRule struct {
	Times           int     `json:"times"`
	VM              string  `json:"vm"`            // only uploads to this VM's lease
	Probability     float64 `json:"probability"`   // else with this probability (0: always)
	Status          int     `json:"status"`        // answer this after AfterBytes (0: off)
	AfterBytes      int64   `json:"after_bytes"`   // bytes to read before Status/reset
	ResetAfterBytes bool    `json:"reset"`         // reset the connection after AfterBytes
	StallSeconds    float64 `json:"stall_seconds"` // accept, then read nothing for T s
	ThrottleBps     int64   `json:"throttle_bps"`  // read at most B bytes per second
	applied         int
}

// soapRule makes one SOAP method misbehave: a fault, a delay or a dropped answer.
// Nth, Times and Probability count only the calls that match Method and VM.
type soapRule struct {
	Method      string  `json:"method"`      // e.g. ImportVApp; "*" for every method
	VM          string  `json:"vm"`          // only calls about this VM (by name, or its lease)
	Fault       string  `json:"fault"`       // vim25 fault type, e.g. NotAuthenticated
	Nth         int     `json:"nth"`         // only the Nth matching call (1-based); 0: every
	Times       int     `json:"times"`       // at most this many times (0: no limit)
	Probability float64 `json:"probability"` // else with this probability (0: always)
	DelayMs     int     `json:"delay_ms"`    // answer late
	// the delay comes after vcsim carried the call out (a slow answer), not before
	DelayAfterCall bool `json:"delay_after_call"`
	Drop           bool `json:"drop"` // close the connection mid-answer, vcsim never sees the call
	// let vcsim carry the call out, then close the connection mid-answer: the
	// client cannot tell whether it happened (a lost answer)
	DropAfterCall bool `json:"drop_after_call"`
	// CloneVM_Task and ReconfigVM_Task: the task ends in this vim25 fault (clones.go)
	TaskFault string `json:"task_fault"`
	calls     int
	applied   int
}

type faultRules struct {
	NFC   []*nfcRule  `json:"nfc"`
	SOAP  []*soapRule `json:"soap"`
	Lease *leaseRule  `json:"lease"`
	Seed  int64       `json:"seed"`
}

// harness holds the counters and fault rules; every field is guarded by mu.
type harness struct {
	mu      sync.Mutex
	methods map[string]*methodCount
	nfcReqs map[string]int
	// client connections (remote addresses) that carried NFC requests: a
	// client that keeps its upload connections alive opens one per worker
	nfcConns map[string]bool
	nfcBytes int64
	nfcNow   int // uploads in flight now
	nfcMax   int // most uploads ever in flight at once
	// NFC faults applied since the reset, by kind (status, reset, stall, throttle)
	nfcFaults map[string]int
	faults    faultRules
	rng       *mrand.Rand
	// generation changes on every reset; resetCh is closed then, so that
	// faults in flight end and their late bytes are not counted for the next test.
	generation int
	resetCh    chan struct{}

	leases          map[string]*leaseTrack // every lease vcsim created since the reset
	leasesOpen      map[string]bool        // neither completed nor aborted yet
	liveSessions    map[string]bool        // session cookies logged in and not out
	expiredSessions map[string]bool        // cookies the harness expired
	sessionsExpired int
	// leases vCenter ended itself (their session expired)
	leasesEndedByServer int
	// Leases still open when the session that created them logged out: a
	// client's only way to end a lease whose ImportVApp answer it never got.
	leasesEndedByLogout int

	thumbprint string // SHA-1 of the server certificate, as vSphere writes it (AA:BB:…)

	// vCenter's own behaviour (vcenter.go): what it is now, and at start
	behaviour           behaviour
	defaultBehaviour    behaviour
	clockOffset         time.Duration        // the harness's clock runs this far ahead of wall time
	lastActive          map[string]time.Time // by session cookie: its last call
	sessionsIdleExpired int
	loginsRefused       int // Logins refused by the session cap
	sessionsPeak        int // the most sessions live at once since the reset
	leasesTimedOut      int
	vmsDeletedByServer  int          // VMs the launcher deleted as vCenter does
	vmsAlreadyGone      int          // VMs it set out to delete that the client removed first
	inner               http.Handler // vcsim itself, past the harness
	ownMu               sync.Mutex
	ownCookie           string // the harness's own vcsim session, for its deletions

	// vcsim 0.24 panics in SearchIndex.FindChild when it walks a folder while
	// ImportVApp is creating a VM that has no name yet (a data race in the
	// simulator, not in the client). Real vCenter has no such race, so the
	// harness serializes those calls rather than making clients work around it.
	registryMu sync.Mutex

	clones cloneState  // clones.go
	intake intakeState // intake.go
	pulls  pullState   // pull.go

	overload overloadState // overload.go
}

// shutdown is closed on SIGTERM: injected stalls and throttles end at once,
// so the server can close without waiting out a slow fault.
var shutdown = make(chan struct{})

// pause sleeps for d; false if the launcher shuts down or the harness is
// reset (reset is the channel of the generation the caller started in).
func pause(d time.Duration, reset <-chan struct{}) bool {
	select {
	case <-time.After(d):
		return true
	case <-shutdown:
		return false
	case <-reset:
		return false
	}
}

// current returns the generation and its reset channel.
func (h *harness) current() (int, chan struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.generation, h.resetCh
}

var serializedMethods = map[string]bool{
	"ImportVApp": true, "FindChild": true, "FindByInventoryPath": true, "CreateVM_Task": true,
	"CloneVM_Task": true,
}

func newHarness(defaults behaviour) *harness {
	h := &harness{defaultBehaviour: defaults}
	h.reset()
	return h
}

func (h *harness) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.generation++
	if h.resetCh != nil {
		close(h.resetCh)
	}
	h.resetCh = make(chan struct{})
	h.methods = map[string]*methodCount{}
	h.leases = map[string]*leaseTrack{}
	h.leasesOpen = map[string]bool{}
	if h.liveSessions == nil {
		h.liveSessions = map[string]bool{}
		h.expiredSessions = map[string]bool{}
		h.lastActive = map[string]time.Time{}
	}
	h.behaviour = h.defaultBehaviour
	h.sessionsExpired = 0
	h.sessionsIdleExpired = 0
	h.loginsRefused = 0
	h.sessionsPeak = len(h.liveSessions)
	h.leasesTimedOut = 0
	h.vmsDeletedByServer = 0
	h.vmsAlreadyGone = 0
	h.leasesEndedByServer = 0
	h.leasesEndedByLogout = 0
	h.nfcReqs = map[string]int{}
	h.nfcConns = map[string]bool{}
	h.nfcBytes = 0
	h.nfcMax = h.nfcNow
	h.nfcFaults = map[string]int{}
	h.faults = faultRules{}
	h.rng = mrand.New(mrand.NewSource(1))
	h.resetMoreLocked()
}

func (h *harness) setFaults(rules faultRules) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.faults = rules
	h.rng = mrand.New(mrand.NewSource(rules.Seed))
}

// nfcFault returns the first NFC rule that applies to an upload to lease (may
// be nil: not a lease the harness knows), if any.
func (h *harness) nfcFault(lease *leaseTrack) *nfcRule {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, rule := range h.faults.NFC {
		if rule == nil || (rule.Times > 0 && rule.applied >= rule.Times) {
			continue
		}
		if rule.VM != "" && (lease == nil || lease.vm != rule.VM) {
			continue
		}
		if rule.Probability > 0 && h.rng.Float64() >= rule.Probability {
			continue
		}
		rule.applied++
		switch {
		case rule.StallSeconds > 0:
			h.nfcFaults["stall"]++
		case rule.ThrottleBps > 0:
			h.nfcFaults["throttle"]++
		}
		switch {
		case rule.ResetAfterBytes:
			h.nfcFaults["reset"]++
		case rule.Status != 0:
			h.nfcFaults["status"]++
		}
		copy := *rule
		return &copy
	}
	return nil
}

// concerns reports whether a SOAP request is about the VM named vm: the name
// is an element's whole text (FindChild, CreateImportSpec, ImportVApp), or the
// request names a lease importing that VM. The caller holds h.mu.
func (h *harness) concerns(body []byte, vm string) bool {
	if bytes.Contains(body, []byte(">"+xmlEscape(vm)+"<")) {
		return true
	}
	lease := h.leaseFor(body)
	return lease != nil && lease.vm == vm
}

// soapFault returns the rule to apply to this call of method, if any.
func (h *harness) soapFault(method string, body []byte) *soapRule {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, rule := range h.faults.SOAP {
		if rule.Method != method && rule.Method != "*" {
			continue
		}
		if rule.VM != "" && !h.concerns(body, rule.VM) {
			continue
		}
		rule.calls++
		if rule.Times > 0 && rule.applied >= rule.Times {
			continue
		}
		if rule.Nth > 0 && rule.calls != rule.Nth {
			continue
		}
		if rule.Probability > 0 && h.rng.Float64() >= rule.Probability {
			continue
		}
		rule.applied++
		copy := *rule
		return &copy
	}
	return nil
}

func (h *harness) count(method string, fault bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.countLocked(method, fault)
}

func (h *harness) countLocked(method string, fault bool) {
	c := h.method(method)
	c.Calls++
	if fault {
		c.Faults++
	}
}

// method returns the counters of method, created on first use; caller holds h.mu.
func (h *harness) method(method string) *methodCount {
	c := h.methods[method]
	if c == nil {
		c = &methodCount{}
		h.methods[method] = c
	}
	return c
}

// note applies update to method's counters.
func (h *harness) note(method string, update func(*methodCount)) {
	h.mu.Lock()
	defer h.mu.Unlock()
	update(h.method(method))
}

// soapMethod returns the local name of the first element inside soapenv:Body.
func soapMethod(body []byte) string {
	decoder := xml.NewDecoder(bytes.NewReader(body))
	inBody := false
	for {
		token, err := decoder.Token()
		if err != nil {
			return ""
		}
		if start, ok := token.(xml.StartElement); ok {
			if inBody {
				return start.Name.Local
			}
			if start.Name.Local == "Body" {
				inBody = true
			}
		}
	}
}

// countingReader counts the bytes an NFC upload delivered in its generation.
type countingReader struct {
	io.ReadCloser
	h          *harness
	generation int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.h.mu.Lock()
	if c.generation == c.h.generation {
		c.h.nfcBytes += int64(n)
	}
	c.h.mu.Unlock()
	return n, err
}

func (h *harness) wrap(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/_harness/counters" && r.Method == http.MethodGet:
			h.serveCounters(w)
			return
		case r.URL.Path == "/_harness/reset" && r.Method == http.MethodPost:
			h.reset()
			w.WriteHeader(http.StatusNoContent)
			return
		case r.URL.Path == "/_harness/expire_sessions" && r.Method == http.MethodPost:
			count := h.expireSessions()
			w.Header().Set("Content-Type", "application/json")
			fmt.Fprintf(w, `{"expired": %d}`, count)
			return
		case r.URL.Path == "/_harness/behaviour":
			h.servePullBehaviour(w, r) // pull.go
			return
		case r.URL.Path == "/_harness/clock" && r.Method == http.MethodPost:
			var advance struct {
				Seconds float64 `json:"advance_seconds"`
			}
			if err := json.NewDecoder(r.Body).Decode(&advance); err != nil || advance.Seconds < 0 {
				http.Error(w, "want {\"advance_seconds\": S >= 0}", http.StatusBadRequest)
				return
			}
			h.advanceClock(advance.Seconds)
			w.WriteHeader(http.StatusNoContent)
			return
		case r.URL.Path == "/_harness/faults" && r.Method == http.MethodPost:
			var rules faultRules
			err := json.NewDecoder(r.Body).Decode(&rules)
			if err == nil {
				err = rules.check()
			}
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			h.setFaults(rules)
			w.WriteHeader(http.StatusNoContent)
			return
		case strings.HasPrefix(r.URL.Path, "/nfc/"):
			h.mu.Lock()
			h.nfcReqs[r.Method]++
			h.nfcConns[r.RemoteAddr] = true
			h.nfcNow++
			if h.nfcNow > h.nfcMax {
				h.nfcMax = h.nfcNow
			}
			h.mu.Unlock()
			defer func() {
				h.mu.Lock()
				h.nfcNow--
				h.mu.Unlock()
			}()
			generation, _ := h.current()
			r.Body = h.capIntake(&countingReader{r.Body, h, generation})
			lease := h.nfcLease(r.URL.Path)
			if lease != nil {
				if h.leaseBytes(lease, 0) {
					w.Header().Set("Connection", "close")
					http.Error(w, "lease is in error", http.StatusInternalServerError)
					return
				}
				r.Body = &leaseReader{r.Body, h, lease}
			}
			if rule := h.nfcFault(lease); rule != nil {
				if h.misbehaveNFC(rule, w, r) {
					return
				}
			}
			next.ServeHTTP(w, r)
			return
		case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/sdk"):
			body, err := ioutil.ReadAll(r.Body)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			r.Body = ioutil.NopCloser(bytes.NewReader(body))
			method := soapMethod(body)
			if method != "" {
				h.note(method, func(c *methodCount) { c.Started++ })
			}
			if h.overloadAdmit(method, w) { // overload.go: waits, or 503
				return
			}
			defer h.overloadDone()
			rule := h.soapFault(method, body)
			if rule != nil {
				if rule.DelayMs > 0 && !rule.DelayAfterCall {
					h.note(method, func(c *methodCount) { c.Delayed++ })
					_, reset := h.current()
					pause(time.Duration(rule.DelayMs)*time.Millisecond, reset)
				}
				if rule.Fault != "" {
					if rule.Fault == "NotAuthenticated" {
						// As on vCenter: the session is gone, not just this call.
						h.expireSession(r)
					}
					h.count(method, true)
					writeFault(w, rule.Fault)
					return
				}
				if rule.Drop {
					h.note(method, func(c *methodCount) { c.Dropped++ })
					h.count(method, true)
					dropMidAnswer(w)
					return
				}
			}
			cookie := ""
			if match := cookieValue.FindStringSubmatch(r.Header.Get("Cookie")); match != nil {
				cookie = match[1]
			}
			if h.admitCall(method, cookie, w) || h.beforeSOAP(method, body, w, r) {
				return
			}
			recorder := httptest.NewRecorder()
			if serializedMethods[method] {
				h.registryMu.Lock()
			}
			if !h.servePull(method, body, recorder, r) && // pull.go
				!h.intercept(method, body, rule, recorder, r) {
				next.ServeHTTP(recorder, r)
			}
			if serializedMethods[method] {
				h.registryMu.Unlock()
			}
			entity := ""
			if method == "ImportVApp" && recorder.Code == http.StatusOK {
				if match := leaseReturn.FindSubmatch(recorder.Body.Bytes()); match != nil {
					entity = h.leaseVM(string(match[1]), cookie)
				}
			}
			answer := h.afterSOAP(method, body, recorder, r, entity)
			if method == "HttpNfcLeaseAbort" {
				h.awaitDeletion(body)
			}
			if rule != nil && rule.DelayMs > 0 && rule.DelayAfterCall {
				h.note(method, func(c *methodCount) { c.Delayed++ })
				_, reset := h.current()
				pause(time.Duration(rule.DelayMs)*time.Millisecond, reset)
			}
			if rule != nil && rule.DropAfterCall {
				h.note(method, func(c *methodCount) { c.Dropped++ })
				h.count(method, recorder.Code != http.StatusOK)
				dropMidAnswer(w)
				return
			}
			for key, values := range recorder.Header() {
				w.Header()[key] = values
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(answer)))
			w.WriteHeader(recorder.Code)
			_, _ = w.Write(answer)
			if method != "" {
				h.count(method, recorder.Code != http.StatusOK)
			}
			return
		}
		next.ServeHTTP(w, r)
	})
}

// misbehaveNFC applies rule to one upload; true means the request is answered.
func (h *harness) misbehaveNFC(rule *nfcRule, w http.ResponseWriter, r *http.Request) bool {
	_, reset := h.current()
	if rule.StallSeconds > 0 && !pause(time.Duration(rule.StallSeconds*float64(time.Second)), reset) {
		resetConnection(w)
		return true
	}
	if rule.ThrottleBps > 0 {
		r.Body = &throttledReader{ReadCloser: r.Body, bps: rule.ThrottleBps, start: time.Now(),
			reset: reset}
	}
	if rule.Status == 0 && !rule.ResetAfterBytes {
		return false
	}
	_, _ = io.CopyN(ioutil.Discard, r.Body, rule.AfterBytes)
	if rule.ResetAfterBytes {
		resetConnection(w)
		return true
	}
	w.Header().Set("Connection", "close")
	http.Error(w, fmt.Sprintf("injected failure after %d bytes", rule.AfterBytes), rule.Status)
	return true
}

// throttledReader delivers at most bps bytes per second on average.
type throttledReader struct {
	io.ReadCloser
	bps   int64
	start time.Time
	read  int64
	reset <-chan struct{}
}

func (t *throttledReader) Read(p []byte) (int, error) {
	if int64(len(p)) > t.bps/10+1 {
		p = p[:t.bps/10+1]
	}
	n, err := t.ReadCloser.Read(p)
	t.read += int64(n)
	due := t.start.Add(time.Duration(float64(t.read) / float64(t.bps) * float64(time.Second)))
	if wait := time.Until(due); wait > 0 && !pause(wait, t.reset) {
		return n, io.ErrUnexpectedEOF
	}
	return n, err
}

// resetConnection closes the client's TCP connection abruptly (RST, not FIN).
func resetConnection(w http.ResponseWriter) {
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, _, err := hijacker.Hijack()
	if err != nil {
		return
	}
	if tlsConn, ok := conn.(*tls.Conn); ok {
		if tcp, ok := tlsConn.NetConn().(*net.TCPConn); ok {
			_ = tcp.SetLinger(0)
		}
	}
	_ = conn.Close()
}

// dropMidAnswer starts a SOAP answer and closes the connection half-way.
func dropMidAnswer(w http.ResponseWriter) {
	hijacker, ok := w.(http.Hijacker)
	if !ok {
		return
	}
	conn, buf, err := hijacker.Hijack()
	if err != nil {
		return
	}
	_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: 4096\r\n\r\n" +
		"<?xml version=\"1.0\" encoding=\"UTF-8\"?><soapenv:Envelope")
	_ = buf.Flush()
	_ = conn.Close()
}

// writeFault answers with a SOAP fault of the given vim25 type.
func writeFault(w http.ResponseWriter, fault string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" `+
		`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
<soapenv:Body><soapenv:Fault><faultcode>ServerFaultCode</faultcode>`+
		`<faultstring>injected %[1]s</faultstring><detail><%[1]sFault xmlns="urn:vim25" `+
		`xsi:type="%[1]s"></%[1]sFault></detail></soapenv:Fault></soapenv:Body></soapenv:Envelope>`,
		fault)
}

// selfSignedCertificate makes a P-256 certificate for 127.0.0.1 and localhost.
// (vcsim's built-in test certificate has a 1024-bit RSA key, which OpenSSL's
// default security level rejects, so verification-on tests could not use it.)
func selfSignedCertificate(dir string) (tls.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "vcsim.asyncovf.test"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1"), net.ParseIP("::1")},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return tls.Certificate{}, "", err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	path := filepath.Join(dir, "vcsim-ca.pem")
	if err := ioutil.WriteFile(path, certPEM, 0o644); err != nil {
		return tls.Certificate{}, "", err
	}
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	return cert, path, err
}

// sha1Thumbprint formats a certificate's SHA-1 digest as vSphere does: AA:BB:….
func sha1Thumbprint(der []byte) string {
	sum := sha1.Sum(der)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	esx := flag.Bool("esx", false, "simulate a standalone ESXi host instead of vCenter")
	verbose := flag.Bool("v", false, "keep vcsim's per-request log on stderr")
	var defaults behaviour
	flag.BoolVar(&defaults.DeleteOnAbort, "delete-on-abort", true,
		"delete an import's VM when its lease is aborted or times out, as vCenter does")
	flag.IntVar(&defaults.LeaseTimeoutSeconds, "lease-timeout", 300,
		"seconds a lease lives without progress, as on vCenter (0: vcsim's own, never enforced)")
	flag.IntVar(&defaults.SessionCap, "session-cap", 500,
		"refuse Login with HTTP 503 while this many sessions are live (0: no cap)")
	flag.Float64Var(&defaults.SessionIdleSeconds, "session-idle", 1800,
		"end sessions idle for this many seconds, as vCenter does after 30 min (0: never)")
	cloneFlags(&defaults)
	intakeFlags(&defaults)
	aboutFlags(&defaults)
	overloadFlags(&defaults)
	pullFlags()
	flag.Parse()

	if !*verbose {
		log.SetOutput(ioutil.Discard)
	}
	dir, err := ioutil.TempDir("", "asyncovf-vcsim-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "vcsim-launcher:", err)
		os.Exit(1)
	}
	defer os.RemoveAll(dir)

	model := simulator.VPX()
	if *esx {
		model = simulator.ESX()
	}
	defer model.Remove()
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim-launcher: creating the model:", err)
		os.Exit(1)
	}
	cert, caFile, err := selfSignedCertificate(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "vcsim-launcher: certificate:", err)
		os.Exit(1)
	}
	model.Service.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	model.Service.Listen = &url.URL{Host: *listen, User: url.UserPassword(username, password)}

	server := model.Service.NewServer()
	harness := newHarness(defaults)
	harness.thumbprint = sha1Thumbprint(cert.Certificate[0])
	harness.inner = server.Config.Handler
	go harness.sweepEvery(time.Second)
	// NewServer has started serving, but nobody knows the address before we
	// print it: swapping the handler here races with no request.
	server.Config.Handler = harness.wrap(server.Config.Handler)

	endpoint := *server.URL
	endpoint.User = nil
	line, _ := json.Marshal(map[string]interface{}{
		"url": endpoint.String(), "username": username, "password": password,
		"ca_file": caFile, "pid": os.Getpid(),
	})
	fmt.Println(string(line))
	os.Stdout.Sync()

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	<-signals
	close(shutdown)
	server.CloseClientConnections()
	server.Close()
}
