package main

// A VM's vApp options (config.vAppConfig) as vCenter keeps them, which vcsim
// 0.24 does not: it ignores spec.vAppConfig in CreateVM_Task, ReconfigVM_Task,
// ImportVApp and CloneVM_Task alike. The launcher validates the spec before
// vcsim sees the call (an invalid one is refused as vCenter refuses it, with
// InvalidArgument, and nothing is created) and applies it to the VM once vcsim
// carried the call out.
//
// Edits follow the vSphere API's ArrayUpdateSpec: "add" needs a new key,
// "edit" and "remove" (removeKey) a key the VM has. An edit changes only the
// fields it sets; an empty value or defaultValue counts as set when its element
// is in the request (<value></value>). ovfSection specs are not applied.

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"reflect"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// explicitFields says which optional fields a request sets even when empty,
// which the decoded vim25 types cannot tell (their strings are omitempty).
type explicitFields struct {
	annotation bool           // <annotation> inside <config> (CloneVM_Task's spec.config)
	properties []explicitInfo // one per vAppConfig property spec, in order
}

type explicitInfo struct {
	Info struct {
		Value        *string `xml:"value"`
		DefaultValue *string `xml:"defaultValue"`
	} `xml:"info"`
}

func explicitIn(body []byte) explicitFields {
	var found explicitFields
	decoder := xml.NewDecoder(bytes.NewReader(body))
	var path []string
	for {
		token, err := decoder.Token()
		if err != nil {
			return found
		}
		switch t := token.(type) {
		case xml.StartElement:
			parent := ""
			if len(path) > 0 {
				parent = path[len(path)-1]
			}
			switch {
			case t.Name.Local == "property" && parent == "vAppConfig":
				var info explicitInfo
				if decoder.DecodeElement(&info, &t) != nil {
					return found
				}
				found.properties = append(found.properties, info)
				continue
			case t.Name.Local == "annotation" && parent == "config":
				found.annotation = true
			}
			path = append(path, t.Name.Local)
		case xml.EndElement:
			if len(path) > 0 {
				path = path[:len(path)-1]
			}
		}
	}
}

func invalidArgument(property string) types.BaseMethodFault {
	return &types.InvalidArgument{InvalidProperty: property}
}

// applyVApp returns base (not changed; nil: none yet) with spec applied.
func applyVApp(base *types.VmConfigInfo, spec *types.VmConfigSpec,
	explicit []explicitInfo) (*types.VmConfigInfo, types.BaseMethodFault) {
	out := &types.VmConfigInfo{}
	if base != nil {
		out = deepCopy(base).(*types.VmConfigInfo)
	}
	for i, change := range spec.Property {
		var set *explicitInfo
		if i < len(explicit) {
			set = &explicit[i]
		}
		index := -1
		key, hasKey := arrayKey(change.ArrayUpdateSpec, change.Info != nil, func() int32 {
			return change.Info.Key
		})
		for j := range out.Property {
			if hasKey && out.Property[j].Key == key {
				index = j
			}
		}
		switch change.Operation {
		case types.ArrayUpdateOperationAdd:
			if change.Info == nil || index >= 0 {
				return nil, invalidArgument("vAppConfig.property.info.key")
			}
			out.Property = append(out.Property, *change.Info)
		case types.ArrayUpdateOperationEdit:
			if change.Info == nil || index < 0 {
				return nil, invalidArgument("vAppConfig.property.info.key")
			}
			editProperty(&out.Property[index], change.Info, set)
		case types.ArrayUpdateOperationRemove:
			if index < 0 {
				return nil, invalidArgument("vAppConfig.property.removeKey")
			}
			out.Property = append(out.Property[:index], out.Property[index+1:]...)
		default:
			return nil, invalidArgument("vAppConfig.property.operation")
		}
	}
	for _, change := range spec.Product {
		index := -1
		key, hasKey := arrayKey(change.ArrayUpdateSpec, change.Info != nil, func() int32 {
			return change.Info.Key
		})
		for j := range out.Product {
			if hasKey && out.Product[j].Key == key {
				index = j
			}
		}
		switch change.Operation {
		case types.ArrayUpdateOperationAdd:
			if change.Info == nil || index >= 0 {
				return nil, invalidArgument("vAppConfig.product.info.key")
			}
			out.Product = append(out.Product, *change.Info)
		case types.ArrayUpdateOperationEdit:
			if change.Info == nil || index < 0 {
				return nil, invalidArgument("vAppConfig.product.info.key")
			}
			editProduct(&out.Product[index], change.Info)
		case types.ArrayUpdateOperationRemove:
			if index < 0 {
				return nil, invalidArgument("vAppConfig.product.removeKey")
			}
			out.Product = append(out.Product[:index], out.Product[index+1:]...)
		default:
			return nil, invalidArgument("vAppConfig.product.operation")
		}
	}
	if spec.IpAssignment != nil {
		out.IpAssignment = *deepCopy(spec.IpAssignment).(*types.VAppIPAssignmentInfo)
	}
	if spec.Eula != nil {
		out.Eula = append([]string(nil), spec.Eula...)
	}
	if spec.OvfEnvironmentTransport != nil {
		out.OvfEnvironmentTransport = append([]string(nil), spec.OvfEnvironmentTransport...)
	}
	if spec.InstallBootRequired != nil {
		out.InstallBootRequired = *spec.InstallBootRequired
	}
	if spec.InstallBootStopDelay != 0 {
		out.InstallBootStopDelay = spec.InstallBootStopDelay
	}
	return out, nil
}

// arrayKey is the key an ArrayUpdateSpec names: removeKey for "remove", else
// the info's key.
func arrayKey(spec types.ArrayUpdateSpec, hasInfo bool, infoKey func() int32) (int32, bool) {
	if spec.Operation == types.ArrayUpdateOperationRemove {
		switch key := spec.RemoveKey.(type) {
		case int32:
			return key, true
		case int64:
			return int32(key), true
		case int:
			return int32(key), true
		}
		return 0, false
	}
	if !hasInfo {
		return 0, false
	}
	return infoKey(), true
}

func editProperty(dst *types.VAppPropertyInfo, src *types.VAppPropertyInfo, set *explicitInfo) {
	for _, field := range []struct{ from, to *string }{
		{&src.ClassId, &dst.ClassId}, {&src.InstanceId, &dst.InstanceId}, {&src.Id, &dst.Id},
		{&src.Category, &dst.Category}, {&src.Label, &dst.Label}, {&src.Type, &dst.Type},
		{&src.TypeReference, &dst.TypeReference}, {&src.Description, &dst.Description},
	} {
		if *field.from != "" {
			*field.to = *field.from
		}
	}
	if src.UserConfigurable != nil {
		value := *src.UserConfigurable
		dst.UserConfigurable = &value
	}
	if src.Value != "" || (set != nil && set.Info.Value != nil) {
		dst.Value = src.Value
	}
	if src.DefaultValue != "" || (set != nil && set.Info.DefaultValue != nil) {
		dst.DefaultValue = src.DefaultValue
	}
}

func editProduct(dst *types.VAppProductInfo, src *types.VAppProductInfo) {
	for _, field := range []struct{ from, to *string }{
		{&src.ClassId, &dst.ClassId}, {&src.InstanceId, &dst.InstanceId}, {&src.Name, &dst.Name},
		{&src.Vendor, &dst.Vendor}, {&src.Version, &dst.Version},
		{&src.FullVersion, &dst.FullVersion}, {&src.VendorUrl, &dst.VendorUrl},
		{&src.ProductUrl, &dst.ProductUrl}, {&src.AppUrl, &dst.AppUrl},
	} {
		if *field.from != "" {
			*field.to = *field.from
		}
	}
}

// vAppOf returns a copy of a VM's vApp options (nil: it has none); the caller
// holds the VM's lock.
func vAppOf(vm *simulator.VirtualMachine) *types.VmConfigInfo {
	if vm.Config == nil || vm.Config.VAppConfig == nil {
		return nil
	}
	info, ok := vm.Config.VAppConfig.(*types.VmConfigInfo)
	if !ok {
		return nil
	}
	return deepCopy(info).(*types.VmConfigInfo)
}

// setVApp gives the VM these vApp options (nil: none).
func setVApp(ref types.ManagedObjectReference, info *types.VmConfigInfo) {
	vm, ok := simulator.Map.Get(ref).(*simulator.VirtualMachine)
	if !ok {
		return
	}
	simulator.Map.WithLock(vm, func() {
		if info == nil {
			vm.Config.VAppConfig = nil
		} else {
			vm.Config.VAppConfig = info
		}
	})
}

// decodeCall decodes a SOAP request into its vim25 type (e.g.
// *types.CloneVM_Task); nil if it cannot.
func decodeCall(body []byte) interface{} {
	method, err := simulator.UnmarshalBody(types.TypeFunc(), body)
	if err != nil {
		return nil
	}
	return method.Body
}

// vmTaskOutcome reads how a task vcsim ran (before it answered) ended.
func vmTaskOutcome(answer *httptest.ResponseRecorder) (types.AnyType, types.BaseMethodFault, bool) {
	match := taskReturn.FindSubmatch(answer.Body.Bytes())
	if answer.Code != http.StatusOK || match == nil {
		return nil, nil, false
	}
	task, ok := simulator.Map.Get(types.ManagedObjectReference{Type: "Task",
		Value: string(match[1])}).(*simulator.Task)
	if !ok {
		return nil, nil, false
	}
	var result types.AnyType
	var fault types.BaseMethodFault
	simulator.Map.WithLock(task, func() {
		result = task.Info.Result
		if task.Info.Error != nil {
			fault = task.Info.Error.Fault
		} else if task.Info.State != types.TaskInfoStateSuccess {
			fault = &types.SystemError{Reason: "task state " + string(task.Info.State)}
		}
	})
	return result, fault, true
}

// serveVAppOptions carries out CreateVM_Task, ReconfigVM_Task and ImportVApp
// calls whose spec has vApp options (false: none, vcsim alone answers).
func (h *harness) serveVAppOptions(method string, body []byte, w *httptest.ResponseRecorder,
	r *http.Request) bool {
	if !bytes.Contains(body, []byte("<vAppConfig")) {
		return false
	}
	var spec *types.VmConfigSpec
	var target types.ManagedObjectReference // the object called: the VM reconfigured
	removed := false
	switch call := decodeCall(body).(type) {
	case *types.CreateVM_Task:
		target = call.This
		if call.Config.VAppConfig != nil {
			spec = call.Config.VAppConfig.GetVmConfigSpec()
		}
	case *types.ReconfigVM_Task:
		target = call.This
		if call.Spec.VAppConfig != nil {
			spec = call.Spec.VAppConfig.GetVmConfigSpec()
		}
		removed = call.Spec.VAppConfigRemoved != nil && *call.Spec.VAppConfigRemoved
	case *types.ImportVApp:
		if imported, ok := call.Spec.(*types.VirtualMachineImportSpec); ok &&
			imported.ConfigSpec.VAppConfig != nil {
			spec = imported.ConfigSpec.VAppConfig.GetVmConfigSpec()
		}
	}
	if spec == nil && !removed {
		return false
	}
	var base *types.VmConfigInfo
	if method == "ReconfigVM_Task" {
		vm, ok := simulator.Map.Get(target).(*simulator.VirtualMachine)
		if !ok {
			return false // vcsim answers ManagedObjectNotFound
		}
		simulator.Map.WithLock(vm, func() { base = vAppOf(vm) })
	}
	info := base
	if spec != nil {
		var fault types.BaseMethodFault
		if info, fault = applyVApp(base, spec, explicitIn(body).properties); fault != nil {
			if method == "ImportVApp" {
				writeFault(w, "InvalidArgument")
			} else {
				task := newTask(target, method, "VirtualMachine."+map[string]string{
					"CreateVM_Task": "createVm", "ReconfigVM_Task": "reconfigure"}[method])
				endTask(task, nil, fault)
				answerTask(w, method, task)
			}
			return true
		}
	}
	if removed {
		info = nil
	}
	h.inner.ServeHTTP(w, r)
	switch method {
	case "ImportVApp":
		if match := leaseReturn.FindSubmatch(w.Body.Bytes()); w.Code == http.StatusOK && match != nil {
			cookie := ""
			if value := cookieValue.FindStringSubmatch(r.Header.Get("Cookie")); value != nil {
				cookie = value[1]
			}
			if vm := h.leaseVM(string(match[1]), cookie); vm != "" {
				setVApp(types.ManagedObjectReference{Type: "VirtualMachine", Value: vm}, info)
			}
		}
	case "CreateVM_Task":
		if result, fault, ok := vmTaskOutcome(w); ok && fault == nil {
			if ref, isRef := result.(types.ManagedObjectReference); isRef {
				setVApp(ref, info)
			}
		}
	case "ReconfigVM_Task":
		if _, fault, ok := vmTaskOutcome(w); ok && fault == nil {
			setVApp(target, info)
		}
	}
	return true
}

// deepCopy copies a value of the vim25 types (pointers, interfaces, slices,
// maps and structs are copied, not shared).
func deepCopy(value interface{}) interface{} {
	if value == nil {
		return nil
	}
	return copyValue(reflect.ValueOf(value)).Interface()
}

func copyValue(v reflect.Value) reflect.Value {
	out := reflect.New(v.Type()).Elem()
	switch v.Kind() {
	case reflect.Ptr:
		if !v.IsNil() {
			out.Set(reflect.New(v.Type().Elem()))
			out.Elem().Set(copyValue(v.Elem()))
		}
	case reflect.Interface:
		if !v.IsNil() {
			out.Set(copyValue(v.Elem()))
		}
	case reflect.Slice:
		if !v.IsNil() {
			out.Set(reflect.MakeSlice(v.Type(), v.Len(), v.Len()))
			for i := 0; i < v.Len(); i++ {
				out.Index(i).Set(copyValue(v.Index(i)))
			}
		}
	case reflect.Map:
		if !v.IsNil() {
			out.Set(reflect.MakeMapWithSize(v.Type(), v.Len()))
			for _, key := range v.MapKeys() {
				out.SetMapIndex(key, copyValue(v.MapIndex(key)))
			}
		}
	case reflect.Struct:
		out.Set(v) // unexported fields are shared
		for i := 0; i < v.NumField(); i++ {
			if out.Field(i).CanSet() {
				out.Field(i).Set(copyValue(v.Field(i)))
			}
		}
	default:
		out.Set(v)
	}
	return out
}
