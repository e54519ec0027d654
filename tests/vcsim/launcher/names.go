package main

// ImportVApp refuses a name its folder already holds, as vCenter does
// (vSphere API reference, DuplicateName: "thrown by … ImportVApp"): vcsim
// creates a second VM of that name, or fails with FileAlreadyExists when the
// new VM's files land in the old one's datastore folder. The client relies on
// vCenter's answer instead of asking for the name first, so the simulator
// must give it.
//
// ImportVApp is one of the serialized methods (main.go), so no other
// ImportVApp or CreateVM_Task can take the name between this check and
// vcsim's creation of the VM.

import (
	"fmt"
	"html"
	"net/http/httptest"
	"regexp"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/mo"
	"github.com/vmware/govmomi/vim25/types"
)

var (
	vmImportSpec = regexp.MustCompile(`<spec [^>]*type="VirtualMachineImportSpec"`)
	importFolder = regexp.MustCompile(`<folder [^>]*type="Folder"[^>]*>([^<]+)</folder>`)
)

// refuseDuplicateName answers ImportVApp with DuplicateName (true) when its
// folder holds an entity of the spec's name, and with ManagedObjectNotFound
// when the folder is gone (vcsim would panic); a vApp's spec, or a call
// without a folder (into a vApp), is left to vcsim.
func refuseDuplicateName(body []byte, w *httptest.ResponseRecorder) bool {
	if !vmImportSpec.Match(body) {
		return false
	}
	name, folder := importName.FindSubmatch(body), importFolder.FindSubmatch(body)
	if name == nil || folder == nil {
		return false
	}
	wanted := html.UnescapeString(string(name[1]))
	ref := types.ManagedObjectReference{Type: "Folder", Value: string(folder[1])}
	parent, ok := simulator.Map.Get(ref).(*simulator.Folder)
	if !ok {
		writeFaultText(w, "ManagedObjectNotFound", "The object has already been deleted "+
			"or has not been completely created",
			fmt.Sprintf(`<obj type="Folder">%s</obj>`, xmlEscape(ref.Value)))
		return true
	}
	var holder mo.Reference
	simulator.Map.WithLock(parent, func() {
		holder = simulator.Map.FindByName(wanted, parent.ChildEntity)
	})
	if holder == nil {
		return false
	}
	taken := holder.Reference()
	writeFaultText(w, "DuplicateName", fmt.Sprintf("The name '%s' already exists.", wanted),
		fmt.Sprintf(`<name>%s</name><object type="%s">%s</object>`, xmlEscape(wanted),
			taken.Type, taken.Value))
	return true
}
