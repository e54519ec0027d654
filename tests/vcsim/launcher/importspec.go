package main

// OvfManager.CreateImportSpec answered as vCenter answers it for one VM.
//
// vcsim 0.24 puts the mapped vApp properties (cisp.propertyMapping) into the
// import spec's configSpec.extraConfig and nothing into its vAppConfig.
// vCenter puts nothing into extraConfig and answers configSpec.vAppConfig (a
// VmConfigSpec) from the descriptor's VirtualSystem:
//
//   - one product spec (operation "add", keys 0, 1, …) per ProductSection:
//     ovf:class, ovf:instance, Product, Vendor, Version, FullVersion,
//     VendorUrl, ProductUrl, AppUrl;
//   - one property spec (operation "add", keys 0, 1, … in document order
//     across the sections) per Property: classId and instanceId (its
//     section's), id (ovf:key), category (the Category element before it in
//     its section), label, description, type (as vCenter names types: the OVF
//     integer types are int, the real ones real, ovf:password="true" makes a
//     password; MinLen/MaxLen and MinValue/MaxValue qualifiers a range such as
//     string(1..64), ValueMap{…} a list such as string["a", "b"]),
//     userConfigurable, defaultValue (ovf:value, or the Value of the
//     deployment option chosen) and value: the propertyMapping value whose
//     key is the property's "class.id.instance" (its parts present, joined
//     with "."), else empty (the default applies);
//   - ovfEnvironmentTransport from the VirtualHardwareSection's (or the
//     VirtualSystem's) ovf:transport, and eula from its EulaSections.
//
// Every string field is in the answer, empty ones as empty elements, as
// vCenter writes them. A descriptor with none of these gets no vAppConfig.
// The launcher rewrites vcsim's answer to that shape: it removes the
// extraConfig entries vcsim made of the propertyMapping and adds vAppConfig
// to the configSpec where the XML schema orders it (after extraConfig,
// swapPlacement and bootOptions, before ftInfo and the fields after it).
// Answers of a VirtualSystemCollection (a vApp), faults, and a simulated
// standalone host (-esx) are as vcsim makes them. ImportVApp then carries
// the spec's vAppConfig to the VM (vapp.go).

import (
	"bytes"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/vmware/govmomi/simulator"
	"github.com/vmware/govmomi/vim25/types"
)

// ovfElement is any element of a descriptor, with its attributes, text and children.
type ovfElement struct {
	XMLName  xml.Name
	Attrs    []xml.Attr   `xml:",any,attr"`
	Text     string       `xml:",chardata"`
	Children []ovfElement `xml:",any"`
}

// attr is the value of the element's attribute ovf:name (or name unqualified).
func (e *ovfElement) attr(name string) (string, bool) {
	for _, a := range e.Attrs {
		if a.Name.Local == name && (a.Name.Space == "" || a.Name.Space == "ovf" ||
			strings.HasPrefix(a.Name.Space, "http://schemas.dmtf.org/ovf/envelope/")) {
			return a.Value, true
		}
	}
	return "", false
}

func (e *ovfElement) attrOr(name string) string {
	value, _ := e.attr(name)
	return value
}

// childText is the trimmed text of the first child named name ("" if none).
func (e *ovfElement) childText(name string) string {
	for i := range e.Children {
		if e.Children[i].XMLName.Local == name {
			return strings.TrimSpace(e.Children[i].Text)
		}
	}
	return ""
}

type vAppProduct struct {
	classID, instanceID, name, vendor, version, fullVersion, vendorURL, productURL, appURL string
}

type vAppProperty struct {
	classID, instanceID, id, category, label, kind string
	defaultValue, value, description               string
	userConfigurable                               bool
}

// vAppOptions is what vCenter reads from a VirtualSystem into a VmConfigSpec.
type vAppOptions struct {
	products   []vAppProduct
	properties []vAppProperty
	transports []string
	eula       []string
}

func (v *vAppOptions) empty() bool {
	return len(v.products) == 0 && len(v.properties) == 0 && len(v.transports) == 0 &&
		len(v.eula) == 0
}

// chosenConfiguration is the deployment option a CreateImportSpec call deploys:
// the one asked for, else the descriptor's default (else its first).
func chosenConfiguration(envelope *ovfElement, asked string) string {
	if asked != "" {
		return asked
	}
	first := ""
	for _, section := range envelope.Children {
		if section.XMLName.Local != "DeploymentOptionSection" {
			continue
		}
		for _, c := range section.Children {
			if c.XMLName.Local != "Configuration" {
				continue
			}
			if first == "" {
				first = c.attrOr("id")
			}
			if value, _ := c.attr("default"); strings.EqualFold(value, "true") {
				return c.attrOr("id")
			}
		}
	}
	return first
}

// readVAppOptions reads a descriptor's vApp options as vCenter does; nil if
// the descriptor is not one VirtualSystem (or cannot be read).
func readVAppOptions(descriptor string, mapping []types.KeyValue,
	deployment string) *vAppOptions {
	var envelope ovfElement
	if xml.Unmarshal([]byte(descriptor), &envelope) != nil {
		return nil
	}
	var system *ovfElement
	for i := range envelope.Children {
		switch envelope.Children[i].XMLName.Local {
		case "VirtualSystem":
			system = &envelope.Children[i]
		case "VirtualSystemCollection":
			return nil
		}
	}
	if system == nil {
		return nil
	}
	values := map[string]string{}
	for _, kv := range mapping {
		values[kv.Key] = kv.Value
	}
	configuration := chosenConfiguration(&envelope, deployment)
	options := &vAppOptions{}
	transport := system.attrOr("transport")
	for i := range system.Children {
		section := &system.Children[i]
		switch section.XMLName.Local {
		case "ProductSection":
			options.readProductSection(section, values, configuration)
		case "VirtualHardwareSection":
			if t := section.attrOr("transport"); t != "" && transport == "" {
				transport = t
			}
		case "EulaSection":
			if license := section.childText("License"); license != "" {
				options.eula = append(options.eula, license)
			}
		}
	}
	options.transports = strings.Fields(transport)
	return options
}

func (v *vAppOptions) readProductSection(section *ovfElement, values map[string]string,
	configuration string) {
	classID, instanceID := section.attrOr("class"), section.attrOr("instance")
	v.products = append(v.products, vAppProduct{
		classID: classID, instanceID: instanceID,
		name: section.childText("Product"), vendor: section.childText("Vendor"),
		version: section.childText("Version"), fullVersion: section.childText("FullVersion"),
		vendorURL: section.childText("VendorUrl"), productURL: section.childText("ProductUrl"),
		appURL: section.childText("AppUrl"),
	})
	category := ""
	for i := range section.Children {
		element := &section.Children[i]
		switch element.XMLName.Local {
		case "Category":
			category = strings.TrimSpace(element.Text)
		case "Property":
			id := element.attrOr("key")
			p := vAppProperty{classID: classID, instanceID: instanceID, id: id,
				category: category, label: element.childText("Label"),
				description:  element.childText("Description"),
				defaultValue: element.attrOr("value")}
			password, _ := element.attr("password")
			p.kind = vCenterType(element.attrOr("type"), element.attrOr("qualifiers"),
				strings.EqualFold(password, "true"))
			configurable, _ := element.attr("userConfigurable")
			p.userConfigurable = strings.EqualFold(configurable, "true")
			for _, value := range element.Children {
				if value.XMLName.Local != "Value" || configuration == "" {
					continue
				}
				for _, name := range strings.Fields(value.attrOr("configuration")) {
					if name == configuration {
						p.defaultValue = value.attrOr("value")
					}
				}
			}
			var parts []string
			for _, part := range []string{classID, id, instanceID} {
				if part != "" {
					parts = append(parts, part)
				}
			}
			p.value = values[strings.Join(parts, ".")]
			v.properties = append(v.properties, p)
		}
	}
}

var (
	qualifierCall = regexp.MustCompile(`(\w+)\(([^)]*)\)`)
	qualifierMap  = regexp.MustCompile(`ValueMap\s*\{([^}]*)\}`)
)

// vCenterType names an OVF property type as VAppPropertyInfo.type does.
func vCenterType(ovfType string, qualifiers string, password bool) string {
	kind := ovfType
	low, high := "MinLen", "MaxLen"
	switch {
	case strings.HasPrefix(ovfType, "uint") || strings.HasPrefix(ovfType, "sint"):
		kind, low, high = "int", "MinValue", "MaxValue"
	case strings.HasPrefix(ovfType, "real"):
		kind, low, high = "real", "MinValue", "MaxValue"
	case ovfType == "string" && password:
		kind = "password"
	case ovfType != "string":
		return kind
	}
	if match := qualifierMap.FindStringSubmatch(qualifiers); match != nil && kind == "string" {
		var choices []string
		for _, choice := range strings.Split(match[1], ",") {
			choices = append(choices, strconv.Quote(strings.Trim(strings.TrimSpace(choice), `"`)))
		}
		return kind + "[" + strings.Join(choices, ", ") + "]"
	}
	bounds := map[string]string{}
	for _, match := range qualifierCall.FindAllStringSubmatch(qualifiers, -1) {
		bounds[match[1]] = strings.TrimSpace(match[2])
	}
	if bounds[low] != "" || bounds[high] != "" {
		return kind + "(" + bounds[low] + ".." + bounds[high] + ")"
	}
	return kind
}

// xml is the VmConfigSpec of these options, as the element vAppConfig.
func (v *vAppOptions) xml() []byte {
	var b bytes.Buffer
	fields := func(pairs ...string) {
		for i := 0; i < len(pairs); i += 2 {
			b.WriteString("<" + pairs[i] + ">" + xmlEscape(pairs[i+1]) + "</" + pairs[i] + ">")
		}
	}
	b.WriteString(`<vAppConfig xsi:type="VmConfigSpec">`)
	for key, p := range v.products {
		b.WriteString(`<product><operation>add</operation><info>`)
		fields("key", strconv.Itoa(key), "classId", p.classID, "instanceId", p.instanceID,
			"name", p.name, "vendor", p.vendor, "version", p.version,
			"fullVersion", p.fullVersion, "vendorUrl", p.vendorURL,
			"productUrl", p.productURL, "appUrl", p.appURL)
		b.WriteString(`</info></product>`)
	}
	for key, p := range v.properties {
		b.WriteString(`<property><operation>add</operation><info>`)
		fields("key", strconv.Itoa(key), "classId", p.classID, "instanceId", p.instanceID,
			"id", p.id, "category", p.category, "label", p.label, "type", p.kind,
			"typeReference", "", "userConfigurable", strconv.FormatBool(p.userConfigurable),
			"defaultValue", p.defaultValue, "value", p.value, "description", p.description)
		b.WriteString(`</info></property>`)
	}
	for _, text := range v.eula {
		fields("eula", text)
	}
	for _, transport := range v.transports {
		fields("ovfEnvironmentTransport", transport)
	}
	b.WriteString(`</vAppConfig>`)
	return b.Bytes()
}

// afterVAppConfig are VirtualMachineConfigSpec's fields that the schema
// orders after vAppConfig.
var afterVAppConfig = map[string]bool{
	"ftInfo": true, "repConfig": true, "vAppConfigRemoved": true, "vAssertsEnabled": true,
	"changeTrackingEnabled": true, "firmware": true, "maxMksConnections": true,
	"guestAutoLockEnabled": true, "managedBy": true, "memoryReservationLockedToMax": true,
	"nestedHVEnabled": true, "vPMCEnabled": true, "scheduledHardwareUpgradeInfo": true,
	"vmProfile": true, "messageBusTunnelEnabled": true, "crypto": true,
	"migrateEncryption": true, "sgxInfo": true, "ftEncryptionMode": true,
	"guestMonitoringModeInfo": true, "sevEnabled": true, "numaInfo": true,
	"pmemFailoverEnabled": true, "vmxStatsCollectionEnabled": true,
	"vmOpNotificationToAppEnabled": true, "vmOpNotificationTimeout": true,
	"deviceSwap": true, "simultaneousThreads": true, "pmem": true, "deviceGroups": true,
	"fixedPassthruHotPlugEnabled": true,
}

// answerEdit replaces answer[start:end] with text.
type answerEdit struct {
	start, end int64
	text       []byte
}

// vmImportSpecEdits finds, in a CreateImportSpecResponse whose importSpec is a
// VirtualMachineImportSpec, the extraConfig entries named by mapped (to
// remove) and where vAppConfig goes; false: not such an answer, or one that
// has a vAppConfig already.
func vmImportSpecEdits(answer []byte, mapped map[string]bool) ([]answerEdit, int64, bool) {
	decoder := xml.NewDecoder(bytes.NewReader(answer))
	var path []string
	var edits []answerEdit
	for {
		start := decoder.InputOffset()
		token, err := decoder.Token()
		if err != nil {
			return nil, 0, false
		}
		switch t := token.(type) {
		case xml.StartElement:
			depth := len(path)
			switch {
			case t.Name.Local == "importSpec" && depth > 0 && path[depth-1] == "returnval":
				kind := ""
				for _, a := range t.Attr {
					if a.Name.Local == "type" {
						kind = a.Value[strings.LastIndex(a.Value, ":")+1:]
					}
				}
				if kind != "VirtualMachineImportSpec" {
					return nil, 0, false
				}
			case depth > 1 && path[depth-1] == "configSpec" && path[depth-2] == "importSpec":
				switch {
				case t.Name.Local == "vAppConfig":
					return nil, 0, false
				case afterVAppConfig[t.Name.Local]:
					return edits, start, true
				case t.Name.Local == "extraConfig":
					var option struct {
						Key string `xml:"key"`
					}
					if decoder.DecodeElement(&option, &t) != nil {
						return nil, 0, false
					}
					if mapped[option.Key] {
						edits = append(edits, answerEdit{start: start, end: decoder.InputOffset()})
					}
					continue
				}
				if decoder.Skip() != nil {
					return nil, 0, false
				}
				continue
			}
			path = append(path, t.Name.Local)
		case xml.EndElement:
			if t.Name.Local == "configSpec" && len(path) > 1 && path[len(path)-2] == "importSpec" {
				return edits, start, true
			}
			if len(path) > 0 {
				path = path[:len(path)-1]
			}
		}
	}
}

// applyEdits makes the edits (which do not overlap) to answer.
func applyEdits(answer []byte, edits []answerEdit) []byte {
	sort.SliceStable(edits, func(i, j int) bool { return edits[i].start < edits[j].start })
	var out bytes.Buffer
	at := int64(0)
	for _, edit := range edits {
		out.Write(answer[at:edit.start])
		out.Write(edit.text)
		at = edit.end
	}
	out.Write(answer[at:])
	return out.Bytes()
}

// vCenterImportSpec rewrites vcsim's CreateImportSpec answer to vCenter's
// shape (see the top of this file); the answer as it was if it does not apply.
func vCenterImportSpec(request []byte, answer []byte) []byte {
	call, ok := decodeCall(request).(*types.CreateImportSpec)
	if !ok || !simulator.Map.IsVPX() {
		return answer
	}
	options := readVAppOptions(call.OvfDescriptor, call.Cisp.PropertyMapping,
		call.Cisp.DeploymentOption)
	if options == nil {
		return answer
	}
	mapped := map[string]bool{}
	for _, kv := range call.Cisp.PropertyMapping {
		mapped[kv.Key] = true
	}
	edits, insertAt, ok := vmImportSpecEdits(answer, mapped)
	if !ok {
		return answer
	}
	if !options.empty() {
		edits = append(edits, answerEdit{start: insertAt, end: insertAt, text: options.xml()})
	}
	return applyEdits(answer, edits)
}

// serveImportSpec carries out CreateImportSpec: vcsim's answer, as vCenter's.
func (h *harness) serveImportSpec(body []byte, w *httptest.ResponseRecorder, r *http.Request) {
	inner := httptest.NewRecorder()
	h.inner.ServeHTTP(inner, r)
	answer := inner.Body.Bytes()
	if inner.Code == http.StatusOK {
		answer = vCenterImportSpec(body, answer)
	}
	for key, values := range inner.Header() {
		w.Header()[key] = values
	}
	w.WriteHeader(inner.Code)
	_, _ = w.Write(answer)
}
