// Command vcsim-launcher runs govmomi's vCenter simulator for asyncovf's tests.
//
// It serves the simulator over TLS on a loopback port, prints one JSON line
// (URL, credentials, CA file), counts every SOAP method and NFC upload for the
// tests to assert on (GET /_harness/counters, POST /_harness/reset), and exits
// cleanly on SIGTERM or SIGINT.
package main

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
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
	"net"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
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
	Calls  int `json:"calls"`
	Faults int `json:"faults"`
}

// harness holds the counters; every field is guarded by mu.
type harness struct {
	mu       sync.Mutex
	methods  map[string]*methodCount
	nfcReqs  map[string]int
	nfcBytes int64

	// vcsim 0.24 panics in SearchIndex.FindChild when it walks a folder while
	// ImportVApp is creating a VM that has no name yet (a data race in the
	// simulator, not in the client). Real vCenter has no such race, so the
	// harness serializes those calls rather than making clients work around it.
	registryMu sync.Mutex
}

var serializedMethods = map[string]bool{
	"ImportVApp": true, "FindChild": true, "FindByInventoryPath": true, "CreateVM_Task": true,
}

func newHarness() *harness {
	h := &harness{}
	h.reset()
	return h
}

func (h *harness) reset() {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.methods = map[string]*methodCount{}
	h.nfcReqs = map[string]int{}
	h.nfcBytes = 0
}

func (h *harness) count(method string, fault bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.methods[method]
	if c == nil {
		c = &methodCount{}
		h.methods[method] = c
	}
	c.Calls++
	if fault {
		c.Faults++
	}
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

// statusRecorder remembers the status code a handler wrote.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

// countingReader counts the bytes an NFC upload delivered.
type countingReader struct {
	io.ReadCloser
	h *harness
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	c.h.mu.Lock()
	c.h.nfcBytes += int64(n)
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
		case strings.HasPrefix(r.URL.Path, "/nfc/"):
			h.mu.Lock()
			h.nfcReqs[r.Method]++
			h.mu.Unlock()
			r.Body = &countingReader{r.Body, h}
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
			recorder := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
			if serializedMethods[method] {
				h.registryMu.Lock()
				defer h.registryMu.Unlock()
			}
			next.ServeHTTP(recorder, r)
			if method != "" {
				h.count(method, recorder.status != http.StatusOK)
			}
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (h *harness) serveCounters(w http.ResponseWriter) {
	h.mu.Lock()
	snapshot := map[string]interface{}{
		"methods": h.methods,
		"nfc":     map[string]interface{}{"requests": h.nfcReqs, "bytes": h.nfcBytes},
	}
	data, err := json.Marshal(snapshot)
	h.mu.Unlock()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
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

func main() {
	listen := flag.String("listen", "127.0.0.1:0", "address to listen on")
	esx := flag.Bool("esx", false, "simulate a standalone ESXi host instead of vCenter")
	verbose := flag.Bool("v", false, "keep vcsim's per-request log on stderr")
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
	harness := newHarness()
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
	server.Close()
}
