package main

// What real vCenter does on its own and vcsim does not, on by default so that
// every test meets it:
//
//   - it deletes the VM of an import whose lease was aborted or timed out
//     (the import task fails and vCenter rolls back what it created);
//   - it moves a lease to error when no HttpNfcLeaseProgress came within its
//     leaseTimeout (vSphere API reference, HttpNfcLease: "Failure to do so
//     causes the lease to time out and enter the error state"); vCenter's
//     leases time out after 300 s, vcsim's never;
//   - it refuses a Login past its session limit with HTTP 503;
//   - it ends sessions that made no call for a while (30 min by default);
//   - its clone tasks take their time, can be cancelled and roll back
//     (clones.go), a VM's vApp options are kept (vapp.go), and CreateImportSpec
//     answers them in vAppConfig, not extraConfig (importspec.go);
//   - (a test's stand-in for a shared link) NFC uploads are capped in total
//     (intake.go);
//   - under load it slows down, then refuses calls with HTTP 503 (overload.go);
//   - ImportVApp refuses a name its folder holds with DuplicateName
//     (names.go; always on: nothing depends on vcsim's second VM).
//
// Each of the others has a switch (a flag at start, POST /_harness/behaviour at run time;
// a reset restores the flags' values). Time is the harness's clock: wall time
// plus whatever POST /_harness/clock advanced it by, so a test can move past
// a timeout without waiting for it.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"regexp"
	"time"
)

// behaviour says which of vCenter's own actions the launcher takes.
type behaviour struct {
	// delete the VM when its import lease is aborted or times out
	DeleteOnAbort bool `json:"delete_on_abort"`
	// a lease's leaseTimeout in seconds, and the time without progress after
	// which it goes to error (0: vcsim's own 30000 s, never enforced)
	LeaseTimeoutSeconds int `json:"lease_timeout_seconds"`
	// Logins refused with HTTP 503 while this many sessions are live (0: no cap)
	SessionCap int `json:"session_cap"`
	// sessions idle for this long end (0: never)
	SessionIdleSeconds float64 `json:"session_idle_seconds"`
	// the VM of an aborted import is gone before the Abort answer goes out
	// (vCenter's deletion won the race), instead of racing the client's removal
	DeleteBeforeAnswer bool `json:"delete_before_answer"`
	// a CloneVM_Task's task runs this long (0: it has ended when the call is
	// answered, as in vcsim); clones.go
	CloneSeconds float64 `json:"clone_seconds"`
	// a clone task that ends in error (cancelled included) leaves its VM in
	// the inventory; false: the launcher deletes it first, as vCenter does
	CloneLeavesVM bool `json:"clone_leaves_vm"`
	// all NFC uploads together read at most this many MiB/s (0: no cap); intake.go
	NfcTotalMiBs float64 `json:"nfc_total_mib_s"`
	// the API version RetrieveServiceContent announces (empty: vcsim's 6.5); about.go
	APIVersion string `json:"api_version"`
	// overload.go: SOAP calls in flight served without waiting (0: the model is
	// off), the wait in ms per call in flight past them, and the most in flight
	// before calls are refused with HTTP 503 (0: no hard limit)
	OverloadFreeCalls int     `json:"overload_free_calls"`
	OverloadMsPerCall float64 `json:"overload_ms_per_call"`
	OverloadLimit     int     `json:"overload_limit"`
}

var (
	leaseEntity  = regexp.MustCompile(`<entity type="VirtualMachine">([^<]+)</entity>`)
	taskReturn   = regexp.MustCompile(`<returnval type="Task">([^<]+)</returnval>`)
	soapEnvelope = `<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope ` +
		`xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" ` +
		`xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body>%s` +
		`</soapenv:Body></soapenv:Envelope>`
)

// now is the harness's clock; the caller holds h.mu.
func (h *harness) now() time.Time {
	return time.Now().Add(h.clockOffset)
}

// advanceClock moves the harness's clock forward and applies what is now due.
func (h *harness) advanceClock(seconds float64) {
	h.mu.Lock()
	h.clockOffset += time.Duration(seconds * float64(time.Second))
	h.mu.Unlock()
	h.sweep()
}

// leaseTimeout is how long a lease may go without progress; the caller holds h.mu.
func (h *harness) leaseTimeout(l *leaseTrack) float64 {
	if l.rule != nil && l.rule.ExpireAfterSeconds > 0 {
		return l.rule.ExpireAfterSeconds
	}
	return float64(h.behaviour.LeaseTimeoutSeconds)
}

// sweep does what vCenter does in the background: it times out leases that
// got no progress and ends idle sessions. It runs every second, and at once
// when a test advances the clock.
func (h *harness) sweep() {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	for id := range h.leasesOpen {
		if lease := h.leases[id]; lease != nil {
			h.expiredLocked(lease, now)
		}
	}
	if idle := h.behaviour.SessionIdleSeconds; idle > 0 {
		for cookie := range h.liveSessions {
			if now.Sub(h.lastActive[cookie]).Seconds() > idle {
				h.endSessionLocked(cookie)
				h.sessionsIdleExpired++
			}
		}
	}
}

// sweepEvery runs sweep once a second until the launcher shuts down.
func (h *harness) sweepEvery(interval time.Duration) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-ticker.C:
			h.sweep()
		case <-shutdown:
			return
		}
	}
}

// endSessionLocked ends a live session as vCenter's expiry does: its next call
// gets NotAuthenticated and its leases end with it. The caller holds h.mu.
func (h *harness) endSessionLocked(cookie string) {
	if !h.liveSessions[cookie] {
		return
	}
	delete(h.liveSessions, cookie)
	delete(h.lastActive, cookie)
	h.expiredSessions[cookie] = true
	h.sessionsExpired++
	h.leasesEndedByServer += h.endLeasesOfLocked(cookie)
}

// admitCall applies the session cap and idle expiry to one SOAP call; it
// answers the call itself (true) when vCenter would have refused it.
func (h *harness) admitCall(method string, cookie string, w http.ResponseWriter) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	now := h.now()
	if method == "Login" {
		if limit := h.behaviour.SessionCap; limit > 0 && len(h.liveSessions) >= limit {
			h.loginsRefused++
			h.countLocked(method, true)
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			http.Error(w, fmt.Sprintf("too many sessions (%d live, the limit)",
				len(h.liveSessions)), http.StatusServiceUnavailable)
			return true
		}
		return false
	}
	if cookie == "" || !h.liveSessions[cookie] {
		return false
	}
	if idle := h.behaviour.SessionIdleSeconds; idle > 0 &&
		now.Sub(h.lastActive[cookie]).Seconds() > idle {
		h.endSessionLocked(cookie)
		h.sessionsIdleExpired++
		return false // beforeSOAP answers NotAuthenticated for the expired cookie
	}
	h.lastActive[cookie] = now
	return false
}

// innerCall sends one SOAP body straight to vcsim, past the harness: it is
// neither counted nor subject to any rule. cookie may be empty.
func (h *harness) innerCall(body string, cookie string) *httptest.ResponseRecorder {
	request := httptest.NewRequest(http.MethodPost, "/sdk",
		bytes.NewBufferString(fmt.Sprintf(soapEnvelope, body)))
	request.Header.Set("Content-Type", "text/xml; charset=utf-8")
	request.Header.Set("SOAPAction", "urn:vim25/6.5")
	if cookie != "" {
		request.Header.Set("Cookie", "vmware_soap_session="+cookie)
	}
	recorder := httptest.NewRecorder()
	h.inner.ServeHTTP(recorder, request)
	return recorder
}

// ownSession logs the harness in to vcsim once, past the counters, for the
// deletions vCenter makes on its own behalf.
func (h *harness) ownSession() string {
	h.ownMu.Lock()
	defer h.ownMu.Unlock()
	if h.ownCookie != "" {
		return h.ownCookie
	}
	answer := h.innerCall(`<Login xmlns="urn:vim25"><_this type="SessionManager">`+
		`SessionManager</_this><userName>`+username+`</userName><password>`+password+
		`</password></Login>`, "")
	for _, header := range answer.Header()["Set-Cookie"] {
		if cookie := cookieValue.FindStringSubmatch(header); cookie != nil {
			h.ownCookie = cookie[1]
		}
	}
	return h.ownCookie
}

// leaseVM asks vcsim which VM a lease imports, in the session that owns the
// lease (vcsim keeps a lease in its session's registry).
func (h *harness) leaseVM(lease string, cookie string) string {
	answer := h.innerCall(`<RetrievePropertiesEx xmlns="urn:vim25"><_this type=`+
		`"PropertyCollector">propertyCollector</_this><specSet><propSet><type>HttpNfcLease`+
		`</type><pathSet>info</pathSet></propSet><objectSet><obj type="HttpNfcLease">`+
		xmlEscape(lease)+`</obj></objectSet></specSet><options></options>`+
		`</RetrievePropertiesEx>`, cookie)
	if match := leaseEntity.FindSubmatch(answer.Body.Bytes()); match != nil {
		return string(match[1])
	}
	return ""
}

// deleteVMLocked removes an import's VM in the background, as vCenter does
// when the import fails; the caller holds h.mu. It races the client's own
// removal on purpose: so does vCenter's.
func (h *harness) deleteVMLocked(lease *leaseTrack) {
	if !h.behaviour.DeleteOnAbort || lease.entity == "" || lease.deleteStarted {
		return
	}
	lease.deleteStarted = true
	lease.deleted = make(chan struct{})
	generation := h.generation
	go func() {
		defer close(lease.deleted)
		answer := h.innerCall(`<Destroy_Task xmlns="urn:vim25"><_this type="VirtualMachine">`+
			xmlEscape(lease.entity)+`</_this></Destroy_Task>`, h.ownSession())
		succeeded := h.taskSucceeded(answer)
		h.mu.Lock()
		defer h.mu.Unlock()
		if generation != h.generation {
			return
		}
		if succeeded {
			h.vmsDeletedByServer++
		} else {
			h.vmsAlreadyGone++ // the client removed it first
		}
	}()
}

// serveBehaviour reads (GET) or changes (POST, the fields given) the behaviour.
func (h *harness) serveBehaviour(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if r.Method == http.MethodPost {
		update := h.behaviour
		if err := json.NewDecoder(r.Body).Decode(&update); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		h.behaviour = update
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(h.behaviour)
}

// taskSucceeded reads whether the task an answer started ended in success
// (vcsim runs a task before it answers).
func (h *harness) taskSucceeded(answer *httptest.ResponseRecorder) bool {
	match := taskReturn.FindSubmatch(answer.Body.Bytes())
	if answer.Code != http.StatusOK || match == nil {
		return false
	}
	state := h.innerCall(`<RetrievePropertiesEx xmlns="urn:vim25"><_this type=`+
		`"PropertyCollector">propertyCollector</_this><specSet><propSet><type>Task`+
		`</type><pathSet>info.state</pathSet></propSet><objectSet><obj type="Task">`+
		string(match[1])+`</obj></objectSet></specSet><options></options>`+
		`</RetrievePropertiesEx>`, h.ownSession())
	return bytes.Contains(state.Body.Bytes(), []byte(">success<"))
}

// awaitDeletion holds an Abort's answer until vCenter's deletion of its VM
// ended, when the behaviour says vCenter wins that race.
func (h *harness) awaitDeletion(request []byte) {
	h.mu.Lock()
	lease := h.leaseFor(request)
	wait := h.behaviour.DeleteBeforeAnswer && lease != nil && lease.deleted != nil
	var deleted chan struct{}
	if wait {
		deleted = lease.deleted
	}
	h.mu.Unlock()
	if wait {
		select {
		case <-deleted:
		case <-shutdown:
		}
	}
}
