package main

// GET /_harness/counters: what the launcher saw since the last reset.

import (
	"encoding/json"
	"net/http"
)

func (h *harness) serveCounters(w http.ResponseWriter) {
	h.mu.Lock()
	leasesInError := 0
	for _, lease := range h.leases {
		if lease.errorFault != "" {
			leasesInError++
		}
	}
	snapshot := map[string]interface{}{
		"methods": h.methods,
		"nfc": map[string]interface{}{"requests": h.nfcReqs, "bytes": h.nfcBytes,
			"in_flight": h.nfcNow, "max_in_flight": h.nfcMax, "faults": h.nfcFaults,
			"connections": len(h.nfcConns),
			// through the total cap (intake.go): bytes, and reads that waited
			"cap_bytes": h.intake.bytes, "cap_waits": h.intake.waits},
		"leases_open":            len(h.leasesOpen),
		"leases_created":         len(h.leases),
		"leases_in_error":        leasesInError,
		"sessions_live":          len(h.liveSessions),
		"sessions_expired":       h.sessionsExpired,
		"leases_ended_by_server": h.leasesEndedByServer,
		"leases_ended_by_logout": h.leasesEndedByLogout,
		"leases_timed_out":       h.leasesTimedOut,
		"sessions_idle_expired":  h.sessionsIdleExpired,
		"logins_refused":         h.loginsRefused,
		"sessions_peak":          h.sessionsPeak,
		"vms_deleted_by_server":  h.vmsDeletedByServer,
		"vms_already_gone":       h.vmsAlreadyGone,
		// clone tasks (clones.go)
		"clones_started":    h.clones.started,
		"clones_running":    h.clonesRunning(),
		"clones_succeeded":  h.clones.succeeded,
		"clones_failed":     h.clones.failed,
		"clones_cancelled":  h.clones.cancelled,
		"clone_vms_left":    h.clones.vmsLeft,
		"clone_vms_deleted": h.clones.vmsDeleted,
		// pull tasks (pull.go)
		"pulls_started": h.pulls.started, "pulls_running": h.pullsRunning(),
		"pulls_succeeded": h.pulls.succeeded, "pulls_failed": h.pulls.failed,
		"pulls_cancelled": h.pulls.cancelled, "pull_bytes": h.pulls.bytes,
	}
	for key, value := range h.overloadCounters() { // overload.go
		snapshot[key] = value
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

// resetMoreLocked zeroes the counters of clones.go, intake.go, pull.go and
// overload.go; the caller holds h.mu.
func (h *harness) resetMoreLocked() {
	tasks := h.clones.tasks
	if tasks == nil {
		tasks = map[string]*cloneTask{}
	}
	h.clones = cloneState{tasks: tasks}
	h.intake = intakeState{}
	h.resetPullsLocked() // pull.go
	h.resetOverloadLocked()
}
