package main

// A cap on the launcher's total NFC intake, as one host's link or disk limits
// every upload to it together: all NFC upload bodies read through one shared
// token bucket of nfc_total_mib_s MiB/s (the behaviour; 0: no cap). It is
// apart from an nfcRule's throttle_bps, which limits each upload alone.
//
// The bucket hands out time slots: a read of n bytes starts once the bytes
// read before it (by any upload) have had their n/rate seconds, so the uploads
// together never run ahead of the rate by more than one read. Its counters
// (nfc.cap_bytes, nfc.cap_waits) show that it throttled without timing it.

import (
	"flag"
	"io"
	"time"
)

// intakeBurst is how far the bucket's schedule may lag wall time: the most the
// uploads may run ahead of the rate after an idle moment.
const intakeBurst = 50 * time.Millisecond

// intakeState is the shared bucket; guarded by h.mu.
type intakeState struct {
	free  time.Time // when the next read may start
	bytes int64     // bytes read through the bucket since the reset
	waits int       // reads that had to wait for their slot
}

// intakeFlags registers the total cap's flag.
func intakeFlags(b *behaviour) {
	flag.Float64Var(&b.NfcTotalMiBs, "nfc-total-mib-s", 0,
		"cap all NFC uploads together at this many MiB/s (0: no cap)")
}

// capIntake makes an NFC upload body read through the total cap.
func (h *harness) capIntake(body io.ReadCloser) io.ReadCloser {
	return &cappedReader{ReadCloser: body, h: h}
}

type cappedReader struct {
	io.ReadCloser
	h *harness
}

func (c *cappedReader) Read(p []byte) (int, error) {
	h := c.h
	h.mu.Lock()
	rate := h.behaviour.NfcTotalMiBs * (1 << 20)
	h.mu.Unlock()
	if rate <= 0 {
		return c.ReadCloser.Read(p)
	}
	// at most 1/20 s worth per read, so that concurrent uploads interleave
	if limit := int(rate/20) + 1; len(p) > limit {
		p = p[:limit]
	}
	n, err := c.ReadCloser.Read(p)
	if n == 0 {
		return n, err
	}
	h.mu.Lock()
	now := time.Now()
	// The schedule may lag wall time by up to intakeBurst: a sleep overshoots
	// (by a timer tick, more than a small read's slot), and without the lag
	// each overshoot would be lost, holding the intake far below the rate.
	start := h.intake.free
	if earliest := now.Add(-intakeBurst); start.Before(earliest) {
		start = earliest
	}
	h.intake.free = start.Add(time.Duration(float64(n) / rate * float64(time.Second)))
	h.intake.bytes += int64(n)
	wait := start.Sub(now)
	if wait > 0 {
		h.intake.waits++
	}
	reset := h.resetCh
	h.mu.Unlock()
	if wait > 0 {
		pause(wait, reset) // a reset or shutdown ends the wait, not the upload
	}
	return n, err
}
