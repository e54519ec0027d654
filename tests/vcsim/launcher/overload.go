package main

// An overloaded vCenter: under load it slows down, then refuses calls. With n
// SOAP calls in flight (POST /sdk, counted from the moment a call has arrived
// until its answer is out, the call itself included), each call waits
//
//	overload_ms_per_call × max(0, n − overload_free_calls) ms
//
// before it is served, and a call that finds n > overload_limit (0: no hard
// limit) is refused with HTTP 503 without being served. n is read once, when
// the call arrives. overload_free_calls 0 (the default) turns the model off:
// no waits and no refusals, though the calls in flight are still counted.
// NFC uploads and /_harness requests are not SOAP calls and do not count;
// the session cap (vcenter.go) refuses Logins on its own, as before.
//
// A wait is one pause: a reset or shutdown ends it, and the call is then
// served at once. Counters: overload_refused, overload_delayed,
// overload_wait_ms (the waits' planned total) and calls_in_flight_peak (the
// largest n seen: a call refused past the limit L makes it L + 1).

import (
	"flag"
	"fmt"
	"net/http"
	"time"
)

// overloadState is the model's count of calls; guarded by h.mu.
type overloadState struct {
	inFlight int           // SOAP calls in flight now (kept across resets)
	peak     int           // the most in flight at once since the reset (refused ones too)
	refused  int           // calls refused with HTTP 503
	delayed  int           // calls that waited
	waited   time.Duration // total of the waits
}

// overloadFlags registers the model's flags.
func overloadFlags(b *behaviour) {
	flag.IntVar(&b.OverloadFreeCalls, "overload-free-calls", 0,
		"SOAP calls in flight served without waiting; each call past them adds a wait "+
			"(0: the overload model is off, no waits and no refusals)")
	flag.Float64Var(&b.OverloadMsPerCall, "overload-ms-per-call", 40,
		"milliseconds each SOAP call waits per call in flight past -overload-free-calls")
	flag.IntVar(&b.OverloadLimit, "overload-limit", 0,
		"refuse a SOAP call with HTTP 503 while more than this many are in flight, "+
			"itself included (0: no hard limit)")
}

// resetOverloadLocked zeroes the counters; the calls in flight stay counted.
// The caller holds h.mu.
func (h *harness) resetOverloadLocked() {
	h.overload = overloadState{inFlight: h.overload.inFlight, peak: h.overload.inFlight}
}

// overloadAdmit counts one SOAP call in flight and applies the model to it:
// it waits, or refuses the call with HTTP 503 (true: answered, and no longer
// in flight). Otherwise the caller calls overloadDone once it has answered.
func (h *harness) overloadAdmit(method string, w http.ResponseWriter) bool {
	h.mu.Lock()
	h.overload.inFlight++
	n := h.overload.inFlight
	if n > h.overload.peak {
		h.overload.peak = n
	}
	free, limit := h.behaviour.OverloadFreeCalls, h.behaviour.OverloadLimit
	if free <= 0 {
		h.mu.Unlock()
		return false
	}
	if limit > 0 && n > limit {
		h.overload.refused++
		h.overload.inFlight--
		if method != "" {
			h.countLocked(method, true)
		}
		h.mu.Unlock()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		http.Error(w, fmt.Sprintf("overloaded (%d calls in flight, the limit is %d)", n, limit),
			http.StatusServiceUnavailable)
		return true
	}
	var wait time.Duration
	if n > free {
		wait = time.Duration(h.behaviour.OverloadMsPerCall * float64(n-free) *
			float64(time.Millisecond))
	}
	if wait > 0 {
		h.overload.delayed++
		h.overload.waited += wait
	}
	reset := h.resetCh
	h.mu.Unlock()
	if wait > 0 {
		pause(wait, reset) // a reset or shutdown ends the wait, not the call
	}
	return false
}

// overloadDone ends a call overloadAdmit let through.
func (h *harness) overloadDone() {
	h.mu.Lock()
	h.overload.inFlight--
	h.mu.Unlock()
}

// overloadCounters are the model's counters, for GET /_harness/counters; the
// caller holds h.mu.
func (h *harness) overloadCounters() map[string]interface{} {
	return map[string]interface{}{
		"overload_refused":     h.overload.refused,
		"overload_delayed":     h.overload.delayed,
		"overload_wait_ms":     float64(h.overload.waited) / float64(time.Millisecond),
		"calls_in_flight_peak": h.overload.peak,
	}
}
