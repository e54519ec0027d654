package main

// ESXi's pull mode, which vcsim 0.24 lacks: the host fetches an import's
// files itself (HttpNfcLeasePullFromUrls_Task).
//
//   - An import lease's capabilities read pullModeSupported true (vcsim's are
//     all false; RetrievePropertiesEx answers are rewritten, as leases.go does
//     state); with pull_supported off (-pull-supported=false) false, and the
//     method is refused with NotSupported.
//   - The call is refused with InvalidState unless the lease is ready (open,
//     not in error, not "initializing") with no pull running on it, and with
//     InvalidArgument if a targetDeviceId is none of the lease's importKeys
//     (or is named twice) or a url is not http(s). Else it is answered at once
//     with a task (cancelable, entity the lease's VM) that runs on its own.
//   - The task waits pull_delay_seconds (wall time), then GETs each url with
//     its httpHeaders ("Host" sets the host). https is accepted only if
//     sslThumbprint is the SHA-1 of the leaf certificate (AA:BB:…): else, or
//     with none (ESXi has no CA store), SSLVerifyFault naming the server's. A
//     status other than 200: HttpFault(statusCode); a failed or cut
//     connection: HttpFault(0). With memberName the url is an OVA, streamed
//     through to that member (FileNotFound if none; size is not used for OVA
//     members, per the API reference); else with size > 0 the file must be
//     that long: FileFault, "size mismatch: …".
//   - The bytes go where a push upload goes: a PUT (create) or POST to the
//     device URL through the launcher's NFC path (main.go), so NFC counters,
//     the intake cap, NFC and lease fault rules see a pull as an upload; a
//     failed write ends the task in FileFault.
//   - The task's info.progress and the lease's transferProgress advance as
//     bytes arrive (each file an equal share); that is the lease's progress
//     (its timeout starts again), as ESXi reports it.
//   - CancelTask on a running pull stops the fetch, ends the task in
//     RequestCanceled and is answered then; on an ended one: InvalidState. A
//     lease that ends while its pull runs (Complete, Abort, its session's end,
//     timeout, error) stops it too: InvalidState. A reset or shutdown stops
//     running pulls (counted in the generation they started in).

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"html"
	"io"
	"io/ioutil"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"regexp"
	"strings"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// pullBehaviour is the pull mode's part of the behaviour (/_harness/behaviour).
type pullBehaviour struct {
	PullSupported    bool    `json:"pull_supported"`     // capabilities.pullModeSupported
	PullDelaySeconds float64 `json:"pull_delay_seconds"` // a task waits this long first
}

// pullDefaults are the flags' values; a reset restores them.
var pullDefaults pullBehaviour

// pullFlags registers the pull mode's flags.
func pullFlags() {
	flag.BoolVar(&pullDefaults.PullSupported, "pull-supported", true,
		"import leases support pull mode (HttpNfcLeasePullFromUrls_Task), as ESXi 6.7+ does")
	flag.Float64Var(&pullDefaults.PullDelaySeconds, "pull-delay-seconds", 0,
		"a pull task waits this many seconds before it fetches")
}

// pullTask is one pull task; its flags are guarded by h.mu.
type pullTask struct {
	task       *simulator.Task
	lease      *leaseTrack
	files      []types.HttpNfcLeaseSourceFile
	targets    []string // each file's NFC path, /nfc/<lease>/<file>
	delay      time.Duration
	generation int
	reset      chan struct{}
	ctx        context.Context // done once the pull must stop
	stop       context.CancelFunc
	why        string // why it was stopped: cancelled, lease, reset, shutdown
	ending     bool   // too late to cancel
	ended      bool
	done       chan struct{} // closed once the task has ended
	percent    int32         // the progress last reported (the runner's own)
}

// pullState is what the harness knows of pulls; guarded by h.mu.
type pullState struct {
	behaviour pullBehaviour
	tasks     map[string]*pullTask // every pull task, by task id (kept across resets)
	started   int                  // calls answered with a task
	succeeded int
	failed    int   // ended in error, the cancelled ones included
	cancelled int   // ended by CancelTask
	bytes     int64 // bytes fetched from sources (an OVA's members before the file too)
}

// resetPullsLocked zeroes the counters, restores the flags' behaviour; caller holds h.mu.
func (h *harness) resetPullsLocked() {
	tasks := h.pulls.tasks
	if tasks == nil {
		tasks = map[string]*pullTask{}
	}
	h.pulls = pullState{behaviour: pullDefaults, tasks: tasks}
}

// pullsRunning counts this generation's pull tasks still running; the caller holds h.mu.
func (h *harness) pullsRunning() int {
	running := 0
	for _, pt := range h.pulls.tasks {
		if !pt.ended && pt.generation == h.generation {
			running++
		}
	}
	return running
}

// servePullBehaviour reads or changes the behaviour (vcenter.go) with the
// pull mode's fields added.
func (h *harness) servePullBehaviour(w http.ResponseWriter, r *http.Request) {
	var body []byte
	if r.Method == http.MethodPost {
		var err error
		if body, err = ioutil.ReadAll(r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.mu.Lock()
		check := h.pulls.behaviour
		h.mu.Unlock()
		if err := json.Unmarshal(body, &check); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
	}
	recorder := httptest.NewRecorder()
	h.serveBehaviour(recorder, r)
	merged := map[string]interface{}{}
	if recorder.Code != http.StatusOK || json.Unmarshal(recorder.Body.Bytes(), &merged) != nil {
		for key, values := range recorder.Header() {
			w.Header()[key] = values
		}
		w.WriteHeader(recorder.Code)
		_, _ = w.Write(recorder.Body.Bytes())
		return
	}
	h.mu.Lock()
	if body != nil {
		_ = json.Unmarshal(body, &h.pulls.behaviour) // checked above
	}
	merged["pull_supported"] = h.pulls.behaviour.PullSupported
	merged["pull_delay_seconds"] = h.pulls.behaviour.PullDelaySeconds
	h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(merged)
}

var (
	pullModeField   = regexp.MustCompile(`<pullModeSupported>false</pullModeSupported>`)
	pullModeValue   = regexp.MustCompile(`(<name>capabilities\.pullModeSupported</name><val[^>]*>)false(</val>)`)
	deviceURLBlock  = regexp.MustCompile(`(?s)<deviceUrl>.*?</deviceUrl>`)
	deviceImportKey = regexp.MustCompile(`<importKey>([^<]*)</importKey>`)
	deviceURLPath   = regexp.MustCompile(`<url>[a-z]+://[^/<]*(/[^<]*)</url>`)
)

// pullCapabilitiesLocked makes a lease's capabilities say what the behaviour
// says (vcsim's are all false); the caller holds h.mu.
func (h *harness) pullCapabilitiesLocked(body []byte) []byte {
	if !h.pulls.behaviour.PullSupported {
		return body
	}
	body = pullModeField.ReplaceAll(body, []byte("<pullModeSupported>true</pullModeSupported>"))
	return pullModeValue.ReplaceAll(body, []byte("${1}true${2}"))
}

// stopPullsLocked stops the pulls running on a lease that ended; the caller holds h.mu.
func (h *harness) stopPullsLocked(lease *leaseTrack) {
	for _, pt := range h.pulls.tasks {
		if pt.lease == lease && !pt.ended {
			stopPullLocked(pt, "lease")
		}
	}
}

func stopPullLocked(pt *pullTask, why string) {
	if pt.why == "" {
		pt.why = why
	}
	pt.stop()
}

// servePull carries out HttpNfcLeasePullFromUrls_Task, and CancelTask on a
// pull task; false: not for it (vcsim, or clones.go, answers).
func (h *harness) servePull(method string, body []byte, w *httptest.ResponseRecorder,
	r *http.Request) bool {
	switch method {
	case "HttpNfcLeasePullFromUrls_Task":
		return h.startPull(body, w, r)
	case "CancelTask":
		return h.cancelPull(body, w, r)
	}
	return false
}

func requestCookie(r *http.Request) string {
	if value := cookieValue.FindStringSubmatch(r.Header.Get("Cookie")); value != nil {
		return value[1]
	}
	return ""
}

// writeFaultText answers with a vim25 fault, its message and its fields (XML).
func writeFaultText(w http.ResponseWriter, fault string, message string, fields string) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusInternalServerError)
	fmt.Fprintf(w, soapEnvelope, fmt.Sprintf(`<soapenv:Fault><faultcode>ServerFaultCode</faultcode>`+
		`<faultstring>%[2]s</faultstring><detail><%[1]sFault xmlns="urn:vim25" xsi:type="%[1]s">`+
		`%[3]s</%[1]sFault></detail></soapenv:Fault>`, fault, xmlEscape(message), fields))
}

// pullableLocked says why a lease cannot take a pull now ("": it can); h.mu held.
func (h *harness) pullableLocked(lease *leaseTrack) string {
	switch {
	case !h.leasesOpen[lease.id]:
		return "the lease has ended"
	case h.expiredLocked(lease, h.now()):
		return "the lease is in error: " + lease.errorMessage
	case lease.rule != nil && lease.rule.InitializingReads > 0 &&
		lease.reads <= lease.rule.InitializingReads:
		return "the lease is initializing"
	}
	for _, pt := range h.pulls.tasks {
		if pt.lease == lease && !pt.ended {
			return "a pull is already running on the lease"
		}
	}
	return ""
}

// leaseDevices reads a lease's device URLs from vcsim: importKey → NFC path.
func (h *harness) leaseDevices(lease *leaseTrack) map[string]string {
	answer := h.innerCall(`<RetrievePropertiesEx xmlns="urn:vim25"><_this type=`+
		`"PropertyCollector">propertyCollector</_this><specSet><propSet><type>HttpNfcLease`+
		`</type><pathSet>info</pathSet></propSet><objectSet><obj type="HttpNfcLease">`+
		xmlEscape(lease.id)+`</obj></objectSet></specSet><options></options>`+
		`</RetrievePropertiesEx>`, lease.session)
	devices := map[string]string{}
	for _, block := range deviceURLBlock.FindAll(answer.Body.Bytes(), -1) {
		key, where := deviceImportKey.FindSubmatch(block), deviceURLPath.FindSubmatch(block)
		if key != nil && where != nil {
			devices[html.UnescapeString(string(key[1]))] = html.UnescapeString(string(where[1]))
		}
	}
	return devices
}

// startPull checks a HttpNfcLeasePullFromUrls_Task call and starts its task.
func (h *harness) startPull(body []byte, w *httptest.ResponseRecorder, r *http.Request) bool {
	call, _ := decodeCall(body).(*types.HttpNfcLeasePullFromUrls_Task)
	if call == nil {
		return false
	}
	cookie := requestCookie(r)
	h.mu.Lock()
	lease := h.leases[call.This.Value]
	if lease == nil || lease.session != cookie || !h.liveSessions[cookie] {
		h.mu.Unlock()
		return false // vcsim answers: not a lease of this session
	}
	supported := h.pulls.behaviour.PullSupported
	unready := h.pullableLocked(lease)
	delay := h.pulls.behaviour.PullDelaySeconds
	h.mu.Unlock()
	invalid := func(property string, message string, args ...interface{}) bool {
		writeFaultText(w, "InvalidArgument", fmt.Sprintf(message, args...),
			"<invalidProperty>"+property+"</invalidProperty>")
		return true
	}
	switch {
	case !supported:
		writeFaultText(w, "NotSupported", "this host does not support pull mode", "")
		return true
	case unready != "":
		writeFaultText(w, "InvalidState", unready, "")
		return true
	case len(call.Files) == 0:
		return invalid("files", "no files to pull")
	}
	devices := h.leaseDevices(lease)
	targets := make([]string, len(call.Files))
	for i, file := range call.Files {
		target, known := devices[file.TargetDeviceId]
		if !known {
			return invalid("targetDeviceId", "files[%d].targetDeviceId %q is no importKey of "+
				"this lease, or is named twice", i, file.TargetDeviceId)
		}
		delete(devices, file.TargetDeviceId)
		targets[i] = target
		if source, err := url.Parse(file.Url); err != nil || source.Host == "" ||
			(source.Scheme != "http" && source.Scheme != "https") {
			return invalid("url", "files[%d].url %q is not an http(s) URL", i, file.Url)
		}
	}
	entity := call.This
	if lease.entity != "" {
		entity = types.ManagedObjectReference{Type: "VirtualMachine", Value: lease.entity}
	}
	generation, reset := h.current()
	ctx, stop := context.WithCancel(context.Background())
	pt := &pullTask{lease: lease, files: call.Files, targets: targets,
		delay: time.Duration(delay * float64(time.Second)), generation: generation,
		reset: reset, ctx: ctx, stop: stop, done: make(chan struct{})}
	pt.task = newTask(entity, "HttpNfcLeasePullFromUrls_Task", "HttpNfcLease.pullFromUrls")
	simulator.Map.WithLock(pt.task, func() {
		pt.task.Info.EntityName = lease.vm
		pt.task.Info.Cancelable = true
	})
	h.mu.Lock()
	h.pulls.tasks[pt.task.Self.Value] = pt
	if generation == h.generation {
		h.pulls.started++
	}
	lease.lastProgress = h.now()
	h.mu.Unlock()
	startTask(pt.task)
	go h.watchPull(pt)
	go h.runPull(pt)
	answerTask(w, "HttpNfcLeasePullFromUrls_Task", pt.task)
	return true
}

// watchPull stops a pull whose lease ended or went to error, or on a reset
// or shutdown, until the task ends.
func (h *harness) watchPull(pt *pullTask) {
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	for {
		why := ""
		select {
		case <-pt.done:
			return
		case <-pt.reset:
			why = "reset"
		case <-shutdown:
			why = "shutdown"
		case <-ticker.C:
		}
		h.mu.Lock()
		switch {
		case why != "":
		case pt.generation != h.generation:
			why = "reset"
		case !h.leasesOpen[pt.lease.id] || pt.lease.errorFault != "":
			why = "lease"
		}
		if why != "" {
			stopPullLocked(pt, why)
		}
		h.mu.Unlock()
		if why != "" {
			<-pt.done
			return
		}
	}
}

// pullFailure is how one file's pull failed: the task's fault and its message.
type pullFailure struct {
	fault   types.BaseMethodFault
	message string
}

func (f *pullFailure) Error() string { return f.message }

// runPull waits out the delay, pulls every file, and ends the task.
func (h *harness) runPull(pt *pullTask) {
	var failure *pullFailure
	if pt.delay > 0 {
		timer := time.NewTimer(pt.delay)
		select {
		case <-timer.C:
		case <-pt.ctx.Done():
		}
		timer.Stop()
	}
	for index := range pt.files {
		if pt.ctx.Err() != nil {
			break
		}
		if failure = h.pullFile(pt, index); failure != nil {
			break
		}
	}
	h.mu.Lock()
	pt.ending = true
	why, leaseError := pt.why, pt.lease.errorMessage
	h.mu.Unlock()
	switch why {
	case "cancelled":
		failure = &pullFailure{&types.RequestCanceled{}, ""}
	case "lease":
		message := "the lease ended while the pull ran"
		if leaseError != "" {
			message = "the lease went to error while the pull ran: " + leaseError
		}
		failure = &pullFailure{&types.InvalidState{}, message}
	case "reset", "shutdown":
		failure = &pullFailure{&types.RequestCanceled{}, "the pull was stopped by a launcher " + why}
	}
	if failure == nil {
		h.pullProgress(pt, 100)
		endTask(pt.task, nil, nil)
	} else if _, canceled := failure.fault.(*types.RequestCanceled); canceled && why == "cancelled" {
		endTask(pt.task, nil, failure.fault)
	} else {
		simulator.Map.WithLock(pt.task, func() {
			simulator.Map.Update(pt.task, []types.PropertyChange{
				{Name: "info.completeTime", Val: time.Now()},
				{Name: "info.state", Val: types.TaskInfoStateError},
				{Name: "info.error", Val: types.LocalizedMethodFault{
					Fault: failure.fault, LocalizedMessage: failure.message}},
			})
		})
	}
	h.mu.Lock()
	pt.ended = true
	if pt.generation == h.generation {
		switch {
		case failure == nil:
			h.pulls.succeeded++
		case why == "cancelled":
			h.pulls.cancelled++
			h.pulls.failed++
		default:
			h.pulls.failed++
		}
	}
	h.mu.Unlock()
	pt.stop()
	close(pt.done)
}

// cancelPull carries out CancelTask on a pull task; false: not one of them.
func (h *harness) cancelPull(body []byte, w *httptest.ResponseRecorder, r *http.Request) bool {
	match := taskThis.FindSubmatch(body)
	if match == nil {
		return false
	}
	h.mu.Lock()
	pt := h.pulls.tasks[string(match[1])]
	switch {
	case pt == nil:
		h.mu.Unlock()
		return false
	case !h.liveSessions[requestCookie(r)]:
		h.mu.Unlock()
		writeFault(w, "NotAuthenticated")
		return true
	case pt.ending:
		h.mu.Unlock()
		writeFaultText(w, "InvalidState", "the task has ended", "")
		return true
	}
	stopPullLocked(pt, "cancelled")
	h.mu.Unlock()
	select {
	case <-pt.done:
	case <-shutdown:
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, soapEnvelope, `<CancelTaskResponse xmlns="urn:vim25"></CancelTaskResponse>`)
	return true
}

// pullProgress reports a pull's progress to its task and its lease.
func (h *harness) pullProgress(pt *pullTask, percent int32) {
	if percent <= pt.percent {
		return
	}
	pt.percent = percent
	simulator.Map.WithLock(pt.task, func() {
		simulator.Map.Update(pt.task, []types.PropertyChange{{Name: "info.progress", Val: percent}})
	})
	h.innerCall(fmt.Sprintf(`<HttpNfcLeaseProgress xmlns="urn:vim25"><_this type="HttpNfcLease">`+
		`%s</_this><percent>%d</percent></HttpNfcLeaseProgress>`, xmlEscape(pt.lease.id), percent),
		pt.lease.session)
	h.mu.Lock()
	if h.leasesOpen[pt.lease.id] {
		pt.lease.lastProgress = h.now()
	}
	h.mu.Unlock()
}

// thumbprintError refuses a source's certificate; it names the server's thumbprint.
type thumbprintError struct {
	thumbprint string
	selfSigned bool
	given      string
}

func (e *thumbprintError) Error() string {
	return fmt.Sprintf("the server's thumbprint %s is not the sslThumbprint %q", e.thumbprint, e.given)
}

func normalThumbprint(text string) string {
	return strings.ToUpper(strings.ReplaceAll(strings.TrimSpace(text), ":", ""))
}

// pullClient is a file's HTTP client: no proxy, no connection kept, and TLS
// verified by the file's thumbprint alone, as on ESXi.
func pullClient(file types.HttpNfcLeaseSourceFile) (*http.Client, *http.Transport) {
	want := normalThumbprint(file.SslThumbprint)
	transport := &http.Transport{
		DialContext:           (&net.Dialer{Timeout: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   30 * time.Second,
		ResponseHeaderTimeout: 60 * time.Second,
		DisableKeepAlives:     true,
		TLSClientConfig: &tls.Config{
			// The chain is not verified against a CA store: the thumbprint is
			// the verification, in VerifyConnection.
			InsecureSkipVerify: true,
			VerifyConnection: func(state tls.ConnectionState) error {
				if len(state.PeerCertificates) == 0 {
					return &thumbprintError{given: file.SslThumbprint}
				}
				leaf := state.PeerCertificates[0]
				got := sha1Thumbprint(leaf.Raw)
				if want == "" || normalThumbprint(got) != want {
					return &thumbprintError{thumbprint: got, given: file.SslThumbprint,
						selfSigned: bytes.Equal(leaf.RawIssuer, leaf.RawSubject)}
				}
				return nil
			},
		},
	}
	return &http.Client{Transport: transport}, transport
}

// fetchFailure turns a failed GET (or read of its body) into the task's fault.
func fetchFailure(file types.HttpNfcLeaseSourceFile, err error) *pullFailure {
	var refused *thumbprintError
	if errors.As(err, &refused) {
		return &pullFailure{&types.SSLVerifyFault{SelfSigned: refused.selfSigned,
			Thumbprint: refused.thumbprint}, fmt.Sprintf("GET %s: %s", file.Url, refused)}
	}
	var request *url.Error
	if errors.As(err, &request) {
		err = request.Err // it names the URL again
	}
	return &pullFailure{&types.HttpFault{StatusMessage: err.Error()},
		fmt.Sprintf("GET %s failed: %s", file.Url, err)}
}

// fetchCounter counts the bytes fetched from a source for the generation.
type fetchCounter struct {
	io.Reader
	h  *harness
	pt *pullTask
}

func (c *fetchCounter) Read(p []byte) (int, error) {
	n, err := c.Reader.Read(p)
	c.h.mu.Lock()
	if c.pt.generation == c.h.generation {
		c.h.pulls.bytes += int64(n)
	}
	c.h.mu.Unlock()
	return n, err
}

// pullBody is what one file's NFC write reads: the source's bytes, checked
// against the size the client gave, with progress reported as they pass.
type pullBody struct {
	h        *harness
	pt       *pullTask
	index    int
	file     types.HttpNfcLeaseSourceFile
	src      io.Reader
	expected int64 // the file's length for progress (-1: unknown)
	want     int64 // the client's size, enforced (0: none)
	read     int64
	failure  *pullFailure // why the source ended badly
	eof      bool         // it ended well
}

func (b *pullBody) Read(p []byte) (int, error) {
	if b.failure != nil {
		return 0, b.failure
	}
	if b.eof {
		return 0, io.EOF
	}
	if left := b.want - b.read + 1; b.want > 0 && int64(len(p)) > left {
		p = p[:left] // a byte past the size is enough to tell
	}
	n, err := b.src.Read(p)
	b.read += int64(n)
	switch {
	case b.want > 0 && b.read > b.want:
		b.failure = b.sizeMismatch("more than")
		return n, b.failure
	case err == io.EOF && b.want > 0 && b.read != b.want:
		b.failure = b.sizeMismatch("only")
		return n, b.failure
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.failure = fetchFailure(b.file, fmt.Errorf("after %d bytes: %w", b.read, err))
		return n, b.failure
	}
	share := 100.0 / float64(len(b.pt.files))
	done := float64(b.index) * share
	if b.expected > 0 {
		done += share * float64(b.read) / float64(b.expected)
	}
	if percent := int32(done); percent < 100 {
		b.h.pullProgress(b.pt, percent)
	}
	return n, err
}

func (b *pullBody) sizeMismatch(how string) *pullFailure {
	return &pullFailure{&types.FileFault{File: b.file.Url}, fmt.Sprintf(
		"size mismatch: %s sent %s %d bytes, the given size is %d", b.file.Url, how, b.read, b.want)}
}

// tarMember reads an OVA up to the member named name: its content and size.
func tarMember(source io.Reader, file types.HttpNfcLeaseSourceFile) (io.Reader, int64, *pullFailure) {
	archive := tar.NewReader(source)
	for {
		header, err := archive.Next()
		switch {
		case err == io.EOF:
			return nil, 0, &pullFailure{&types.FileNotFound{FileFault: types.FileFault{
				File: file.MemberName}}, fmt.Sprintf("%s has no member named %s", file.Url,
				file.MemberName)}
		case errors.Is(err, tar.ErrHeader):
			return nil, 0, &pullFailure{&types.FileFault{File: file.Url}, "not an OVA: " + file.Url}
		case err != nil:
			return nil, 0, fetchFailure(file, fmt.Errorf("reading the archive: %w", err))
		}
		regular := header.Typeflag == tar.TypeReg || header.Typeflag == tar.TypeRegA
		if regular && (header.Name == file.MemberName ||
			path.Clean(header.Name) == path.Clean(file.MemberName)) {
			return archive, header.Size, nil
		}
	}
}

// pullFile fetches one file and writes it through the launcher's NFC path.
func (h *harness) pullFile(pt *pullTask, index int) *pullFailure {
	file := pt.files[index]
	request, err := http.NewRequestWithContext(pt.ctx, http.MethodGet, file.Url, nil)
	if err != nil {
		return fetchFailure(file, err)
	}
	for _, header := range file.HttpHeaders {
		if strings.EqualFold(header.Key, "Host") {
			request.Host = header.Value
			continue
		}
		request.Header.Add(header.Key, header.Value)
	}
	client, transport := pullClient(file)
	defer transport.CloseIdleConnections()
	response, err := client.Do(request)
	if err != nil {
		return fetchFailure(file, err)
	}
	defer response.Body.Close()
	if response.StatusCode != http.StatusOK {
		return &pullFailure{&types.HttpFault{StatusCode: int32(response.StatusCode),
			StatusMessage: http.StatusText(response.StatusCode)},
			fmt.Sprintf("GET %s: HTTP %s", file.Url, response.Status)}
	}
	var source io.Reader = &fetchCounter{response.Body, h, pt}
	body := &pullBody{h: h, pt: pt, index: index, file: file, expected: response.ContentLength}
	if file.MemberName != "" {
		member, size, failure := tarMember(source, file)
		if failure != nil {
			return failure
		}
		body.src, body.expected = member, size
	} else {
		body.src, body.want = source, file.Size
		if file.Size > 0 {
			body.expected = file.Size
		}
	}
	method := http.MethodPost
	if file.Create {
		method = http.MethodPut
	}
	upload := httptest.NewRequest(method, pt.targets[index], body).WithContext(pt.ctx)
	upload.RemoteAddr = "pull:" + pt.task.Self.Value
	upload.ContentLength = body.expected
	recorder := httptest.NewRecorder()
	h.wrap(h.inner).ServeHTTP(recorder, upload)
	switch {
	case body.failure != nil:
		return body.failure
	case recorder.Code >= 300 || !body.eof:
		code := recorder.Code
		if code < 300 {
			code = http.StatusInternalServerError // the write was cut
		}
		return &pullFailure{&types.FileFault{File: pt.targets[index]}, fmt.Sprintf(
			"writing %s to %s failed: HTTP %d %s", file.Url, pt.targets[index], code,
			strings.TrimSpace(recorder.Body.String()))}
	}
	return nil
}
