package main

// CloneVM_Task as vCenter carries it out, and CancelTask, which vcsim 0.24
// lacks:
//
//   - The clone keeps what its source has and the spec changes: annotation
//     (the source's unless spec.config sets one), vApp options (the source's,
//     with spec.config.vAppConfig's edits on top, vapp.go) and extraConfig
//     (the source's, under the spec's). vcsim keeps none of these, and it
//     shares the source's device objects with the clone (the source's disks
//     then name the clone's files); the launcher gives the source back copies
//     of its devices as they were. spec.config.deviceChange and
//     spec.location.deviceChange vcsim applies itself (an edit of an existing
//     network card's backing included, once the launcher added the deviceInfo
//     vcsim needs; ReconfigVM_Task's edits get it too).
//   - The call is answered with a task of the launcher's own (info.name
//     CloneVM_Task, entity the source, cancelable). vcsim clones at once, so
//     the clone is in the inventory while the task runs; with the behaviour's
//     clone_seconds > 0 the task stays "running" that long (wall time; it ends
//     early on shutdown or a harness reset), else it has ended when the answer
//     goes out.
//   - A soapRule's task_fault makes the task end in that fault instead of
//     success (a ReconfigVM_Task's too: its VM is left as it was). A spec the launcher refuses (vApp edits of keys the source does
//     not have: InvalidArgument) or a clone vcsim fails ends the task at once,
//     with nothing created.
//   - CancelTask on a running clone task ends it at once in error
//     (RequestCanceled) and is answered once it ended; on one that ended it is
//     refused with InvalidState, as vCenter does; on any other task it goes to
//     vcsim (which has no CancelTask and answers a fault).
//   - A clone task that ends in error after its VM was made leaves that VM in
//     the inventory (clone_leaves_vm, the default: the client must remove it)
//     or the launcher deletes it before the task reports the error
//     (clone_leaves_vm false: vCenter's rollback).

import (
	"bytes"
	"flag"
	"fmt"
	"io/ioutil"
	"net/http"
	"net/http/httptest"
	"reflect"
	"regexp"
	"time"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// cloneTask is one CloneVM_Task the launcher answered with a task of its own;
// its flags are guarded by h.mu.
type cloneTask struct {
	task       *simulator.Task
	vm         *types.ManagedObjectReference // the clone vcsim made (nil: none)
	fault      types.BaseMethodFault         // how the task ends (nil: success)
	seconds    float64                       // how long it runs
	generation int
	reset      chan struct{}
	cancel     chan struct{} // closed by CancelTask
	done       chan struct{} // closed once the task has ended
	cancelled  bool
	ending     bool // too late to cancel
	ended      bool
}

// cloneState is what the harness knows of clone tasks; guarded by h.mu.
type cloneState struct {
	tasks      map[string]*cloneTask // every clone task, by task id (kept across resets)
	started    int                   // CloneVM_Task calls answered with a task
	succeeded  int
	failed     int // ended in error, the cancelled ones included
	cancelled  int // ended by CancelTask
	vmsLeft    int // clones left in the inventory by a task that ended in error
	vmsDeleted int // clones the launcher deleted when their task ended in error
}

var (
	taskThis     = regexp.MustCompile(`<_this[^>]*type="Task"[^>]*>([^<]+)<`)
	deviceChange = regexp.MustCompile(`(?s)<deviceChange>.*?</deviceChange>`)
	deviceStart  = regexp.MustCompile(`<device[ >][^>]*?>|<device>`)
)

// withDeviceInfo gives every device an edit names a deviceInfo: vcsim 0.24
// dereferences it (a nil pointer when the client, as vCenter allows, sends
// none), and the panic would cut the call.
func withDeviceInfo(body []byte) []byte {
	return deviceChange.ReplaceAllFunc(body, func(change []byte) []byte {
		if !bytes.Contains(change, []byte("<operation>edit</operation>")) ||
			bytes.Contains(change, []byte("<deviceInfo")) {
			return change
		}
		location := deviceStart.FindIndex(change)
		if location == nil {
			return change
		}
		var patched []byte
		patched = append(patched, change[:location[1]]...)
		patched = append(patched, `<deviceInfo xsi:type="Description"><label></label><summary></summary></deviceInfo>`...)
		return append(patched, change[location[1]:]...)
	})
}

// cloneFlags registers the clone behaviour's flags.
func cloneFlags(b *behaviour) {
	flag.Float64Var(&b.CloneSeconds, "clone-seconds", 0,
		"a CloneVM_Task's task runs this many seconds (0: it has ended when the call is answered)")
	flag.BoolVar(&b.CloneLeavesVM, "clone-leaves-vm", true,
		"a clone task that ends in error leaves its VM (false: the launcher deletes it, as vCenter does)")
}

// intercept answers the calls the launcher carries out itself, or around
// vcsim, into w; false: vcsim alone answers.
func (h *harness) intercept(method string, body []byte, rule *soapRule,
	w *httptest.ResponseRecorder, r *http.Request) bool {
	if method == "CloneVM_Task" || method == "ReconfigVM_Task" {
		body = withDeviceInfo(body)
		r.Body = ioutil.NopCloser(bytes.NewReader(body))
	}
	switch method {
	case "CloneVM_Task":
		h.serveClone(rule, body, w, r)
		return true
	case "CancelTask":
		return h.serveCancel(body, w, r)
	case "ImportVApp":
		return refuseDuplicateName(body, w) || h.serveVAppOptions(method, body, w, r) // names.go
	case "ReconfigVM_Task":
		return failReconfigure(rule, body, w) || h.serveVAppOptions(method, body, w, r)
	case "CreateVM_Task":
		return h.serveVAppOptions(method, body, w, r)
	case "CreateImportSpec":
		h.serveImportSpec(body, w, r) // importspec.go
		return true
	case "RetrieveServiceContent":
		return h.serveServiceContent(w, r) // about.go
	}
	return false
}

// failReconfigure answers a ReconfigVM_Task whose rule has a task_fault with a
// task that ends in it, the VM left as it was (true); false: no such rule.
func failReconfigure(rule *soapRule, body []byte, w *httptest.ResponseRecorder) bool {
	if rule == nil || rule.TaskFault == "" {
		return false
	}
	call, ok := decodeCall(body).(*types.ReconfigVM_Task)
	if !ok {
		return false
	}
	fault, _ := faultNamed(rule.TaskFault) // checked when the rules were set
	task := newTask(call.This, "ReconfigVM_Task", "VirtualMachine.reconfigure")
	endTask(task, nil, fault)
	answerTask(w, "ReconfigVM_Task", task)
	return true
}

// faultNamed makes a vim25 fault of the given type, e.g. InsufficientResourcesFault.
func faultNamed(name string) (types.BaseMethodFault, bool) {
	kind, ok := types.TypeFunc()(name)
	if !ok {
		return nil, false
	}
	fault, ok := reflect.New(kind).Interface().(types.BaseMethodFault)
	return fault, ok
}

// check refuses rules that name a task fault vim25 does not have.
func (rules faultRules) check() error {
	for _, rule := range rules.SOAP {
		if rule == nil || rule.TaskFault == "" {
			continue
		}
		if _, ok := faultNamed(rule.TaskFault); !ok {
			return fmt.Errorf("task_fault %q is not a vim25 fault type", rule.TaskFault)
		}
	}
	return nil
}

// newTask makes a task of the launcher's own, queued, about entity.
func newTask(entity types.ManagedObjectReference, name string, description string) *simulator.Task {
	task := simulator.CreateTask(entity, "harness", nil)
	simulator.Map.WithLock(task, func() {
		task.Info.Name = name
		task.Info.DescriptionId = description
		task.Info.Reason = &types.TaskReasonUser{UserName: username}
	})
	return task
}

func startTask(task *simulator.Task) {
	simulator.Map.WithLock(task, func() {
		simulator.Map.Update(task, []types.PropertyChange{
			{Name: "info.startTime", Val: time.Now()},
			{Name: "info.state", Val: types.TaskInfoStateRunning},
		})
	})
}

// endTask ends a task in success (fault nil) or in error.
func endTask(task *simulator.Task, result types.AnyType, fault types.BaseMethodFault) {
	changes := []types.PropertyChange{{Name: "info.completeTime", Val: time.Now()}}
	if fault == nil {
		changes = append(changes, types.PropertyChange{Name: "info.state",
			Val: types.TaskInfoStateSuccess})
		if result != nil {
			changes = append(changes, types.PropertyChange{Name: "info.result", Val: result})
		}
	} else {
		message := fmt.Sprintf("%T", fault)
		if _, ok := fault.(*types.RequestCanceled); ok {
			message = "The task was canceled by a user."
			changes = append(changes, types.PropertyChange{Name: "info.cancelled", Val: true})
		}
		changes = append(changes,
			types.PropertyChange{Name: "info.state", Val: types.TaskInfoStateError},
			types.PropertyChange{Name: "info.error", Val: types.LocalizedMethodFault{
				Fault: fault, LocalizedMessage: message}})
	}
	simulator.Map.WithLock(task, func() { simulator.Map.Update(task, changes) })
}

// answerTask answers a *_Task method with the task.
func answerTask(w http.ResponseWriter, method string, task *simulator.Task) {
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, soapEnvelope, fmt.Sprintf(`<%[1]sResponse xmlns="urn:vim25"><returnval `+
		`type="Task">%[2]s</returnval></%[1]sResponse>`, method, xmlEscape(task.Self.Value)))
}

// cloneSeed is what a clone takes from its source, read before vcsim clones it.
type cloneSeed struct {
	annotation  string
	vApp        *types.VmConfigInfo
	extraConfig []types.BaseOptionValue
	devices     []types.BaseVirtualDevice // copies, as they were
}

// seedOf reads a clone's source; the caller holds its lock.
func seedOf(vm *simulator.VirtualMachine) cloneSeed {
	return cloneSeed{
		annotation:  vm.Config.Annotation,
		vApp:        vAppOf(vm),
		extraConfig: deepCopy(vm.Config.ExtraConfig).([]types.BaseOptionValue),
		devices:     deepCopy(vm.Config.Hardware.Device).([]types.BaseVirtualDevice),
	}
}

// carry gives a new clone what it keeps of its source and its spec.
func carry(ref types.ManagedObjectReference, seed cloneSeed, config *types.VirtualMachineConfigSpec,
	vApp *types.VmConfigInfo, annotationSet bool) {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	annotation := seed.annotation
	if config != nil && (config.Annotation != "" || annotationSet) {
		annotation = config.Annotation
	}
	simulator.Map.WithLock(vm, func() {
		if vApp != nil {
			vm.Config.VAppConfig = vApp
		}
		has := map[string]bool{}
		for _, option := range vm.Config.ExtraConfig {
			has[option.GetOptionValue().Key] = true
		}
		for _, option := range seed.extraConfig {
			if !has[option.GetOptionValue().Key] {
				vm.Config.ExtraConfig = append(vm.Config.ExtraConfig, option)
			}
		}
		simulator.Map.Update(vm, []types.PropertyChange{
			{Name: "config.annotation", Val: annotation},
			{Name: "summary.config.annotation", Val: annotation},
		})
	})
}

// serveClone carries out a CloneVM_Task call (see the top of this file).
func (h *harness) serveClone(rule *soapRule, body []byte, w *httptest.ResponseRecorder,
	r *http.Request) {
	call, _ := decodeCall(body).(*types.CloneVM_Task)
	var source *simulator.VirtualMachine
	if call != nil {
		source, _ = simulator.Map.Get(call.This).(*simulator.VirtualMachine)
	}
	if source == nil {
		h.inner.ServeHTTP(w, r) // vcsim answers the fault
		return
	}
	var seed cloneSeed
	var sourceName string
	simulator.Map.WithLock(source, func() { seed, sourceName = seedOf(source), source.Name })
	explicit := explicitIn(body)
	config := call.Spec.Config
	vApp := seed.vApp
	var fault types.BaseMethodFault
	if config != nil && config.VAppConfigRemoved != nil && *config.VAppConfigRemoved {
		vApp = nil
	}
	if config != nil && config.VAppConfig != nil {
		vApp, fault = applyVApp(vApp, config.VAppConfig.GetVmConfigSpec(), explicit.properties)
	}
	var vm *types.ManagedObjectReference
	if fault == nil {
		inner := httptest.NewRecorder()
		h.inner.ServeHTTP(inner, r)
		result, innerFault, ok := vmTaskOutcome(inner)
		simulator.Map.WithLock(source, func() { source.Config.Hardware.Device = seed.devices })
		if !ok { // a fault instead of a task: as vcsim answered
			for key, values := range inner.Header() {
				w.Header()[key] = values
			}
			w.WriteHeader(inner.Code)
			_, _ = w.Write(inner.Body.Bytes())
			return
		}
		fault = innerFault
		if ref, isRef := result.(types.ManagedObjectReference); isRef && fault == nil {
			vm = &ref
			carry(ref, seed, config, vApp, explicit.annotation)
		}
	}
	generation, reset := h.current()
	ct := &cloneTask{vm: vm, fault: fault, generation: generation, reset: reset,
		cancel: make(chan struct{}), done: make(chan struct{})}
	if vm != nil { // the clone exists: the task takes its time, and may fail
		if rule != nil && rule.TaskFault != "" {
			ct.fault, _ = faultNamed(rule.TaskFault)
		}
		h.mu.Lock()
		ct.seconds = h.behaviour.CloneSeconds
		h.mu.Unlock()
	}
	ct.task = newTask(call.This, "CloneVM_Task", "VirtualMachine.clone")
	simulator.Map.WithLock(ct.task, func() {
		ct.task.Info.EntityName = sourceName
		ct.task.Info.Cancelable = true
	})
	h.mu.Lock()
	h.clones.tasks[ct.task.Self.Value] = ct
	if generation == h.generation {
		h.clones.started++
	}
	h.mu.Unlock()
	startTask(ct.task)
	if ct.seconds > 0 {
		go h.endClone(ct)
	} else {
		h.endClone(ct)
	}
	answerTask(w, "CloneVM_Task", ct.task)
}

// endClone waits out a clone task's time (or its cancel), deletes its VM if
// the task fails and the behaviour says so, and ends the task.
func (h *harness) endClone(ct *cloneTask) {
	if ct.seconds > 0 {
		timer := time.NewTimer(time.Duration(ct.seconds * float64(time.Second)))
		select {
		case <-timer.C:
		case <-ct.cancel:
		case <-ct.reset:
		case <-shutdown:
		}
		timer.Stop()
	}
	h.mu.Lock()
	ct.ending = true
	fault := ct.fault
	if ct.cancelled {
		fault = &types.RequestCanceled{}
	}
	leave := h.behaviour.CloneLeavesVM
	h.mu.Unlock()
	deleted := false
	if fault != nil && ct.vm != nil && !leave {
		answer := h.innerCall(`<Destroy_Task xmlns="urn:vim25"><_this type="VirtualMachine">`+
			xmlEscape(ct.vm.Value)+`</_this></Destroy_Task>`, h.ownSession())
		deleted = h.taskSucceeded(answer)
	}
	var result types.AnyType
	if fault == nil {
		result = *ct.vm
	}
	endTask(ct.task, result, fault)
	h.mu.Lock()
	ct.ended = true
	if ct.generation == h.generation {
		switch {
		case fault == nil:
			h.clones.succeeded++
		case ct.vm != nil && leave:
			h.clones.vmsLeft++
		case ct.vm != nil && deleted:
			h.clones.vmsDeleted++
			h.vmsDeletedByServer++
		case ct.vm != nil:
			h.vmsAlreadyGone++ // the client removed it first
		}
		if fault != nil {
			h.clones.failed++
		}
		if ct.cancelled {
			h.clones.cancelled++
		}
	}
	h.mu.Unlock()
	close(ct.done)
}

// serveCancel carries out CancelTask on the launcher's clone tasks; false:
// not one of them, vcsim answers.
func (h *harness) serveCancel(body []byte, w *httptest.ResponseRecorder, r *http.Request) bool {
	match := taskThis.FindSubmatch(body)
	if match == nil {
		return false
	}
	cookie := ""
	if value := cookieValue.FindStringSubmatch(r.Header.Get("Cookie")); value != nil {
		cookie = value[1]
	}
	h.mu.Lock()
	ct := h.clones.tasks[string(match[1])]
	switch {
	case ct == nil:
		h.mu.Unlock()
		return false
	case !h.liveSessions[cookie]:
		h.mu.Unlock()
		writeFault(w, "NotAuthenticated")
		return true
	case ct.ending:
		h.mu.Unlock()
		writeFault(w, "InvalidState")
		return true
	}
	if !ct.cancelled {
		ct.cancelled = true
		close(ct.cancel)
	}
	h.mu.Unlock()
	select {
	case <-ct.done:
	case <-shutdown:
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	fmt.Fprintf(w, soapEnvelope, `<CancelTaskResponse xmlns="urn:vim25"></CancelTaskResponse>`)
	return true
}

// clonesRunning counts the clone tasks of this generation still running; the
// caller holds h.mu.
func (h *harness) clonesRunning() int {
	running := 0
	for _, ct := range h.clones.tasks {
		if !ct.ended && ct.generation == h.generation {
			running++
		}
	}
	return running
}
