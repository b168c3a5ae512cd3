package winevents

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/winevents/golden (review them by hand)")

const sampleDir = "../testdata/winevents"

// goldenLine is the reviewed view of one change in a golden file.
type goldenLine struct {
	Time        string `json:"time"`
	Host        string `json:"host"`
	Kind        Kind   `json:"kind"`
	Ports       string `json:"ports"`
	Protocol    string `json:"protocol,omitempty"`
	Direction   string `json:"direction,omitempty"`
	Action      string `json:"action,omitempty"`
	Active      bool   `json:"active"`
	Opens       bool   `json:"opens"`
	Profiles    string `json:"profiles,omitempty"`
	RuleID      string `json:"rule_id,omitempty"`
	RuleName    string `json:"rule_name,omitempty"`
	Application string `json:"application,omitempty"`
	Service     string `json:"service,omitempty"`
	ModifiedBy  string `json:"modifying_application,omitempty"`
	Actor       string `json:"actor,omitempty"`
	WinManaged  bool   `json:"windows_managed,omitempty"`
	AppPackage  bool   `json:"app_package_rule,omitempty"`
	Local       string `json:"local,omitempty"`
	Remote      string `json:"remote,omitempty"`
	LocalSideBy string `json:"local_side_by,omitempty"`
	Setting     string `json:"setting,omitempty"`
	FilterID    uint64 `json:"filter_id,omitempty"`
	Layer       string `json:"layer,omitempty"`
	EventID     uint32 `json:"event_id"`
	RecordID    uint64 `json:"record_id,omitempty"`
	JoinedEvent uint32 `json:"joined_event_id,omitempty"`
	JoinedRec   uint64 `json:"joined_record_id,omitempty"`
	ReplacesEv  uint32 `json:"replaces_event_id,omitempty"`
	ReplacesRec uint64 `json:"replaces_record_id,omitempty"`
}

func toGolden(c ExposureChange) goldenLine {
	g := goldenLine{
		Time: c.Time.Format(time.RFC3339Nano), Host: c.Host, Kind: c.Kind, Ports: c.Ports.String(),
		Protocol: c.Protocol.String(), Direction: string(c.Direction), Action: string(c.Action),
		Active: c.Active, Opens: c.Opens(), Profiles: c.Profiles, RuleID: c.RuleID, RuleName: c.RuleName,
		Application: c.Application, Service: c.Service, ModifiedBy: c.ModifyingApplication,
		Actor: string(c.Actor), WinManaged: c.WindowsManaged, AppPackage: c.AppPackageRule,
		LocalSideBy: c.LocalSideBy, Setting: c.Setting, FilterID: c.FilterID, Layer: c.Layer,
		EventID: c.Source.EventID, RecordID: c.Source.RecordID,
	}
	if c.LocalAddress.IsValid() {
		g.Local = c.LocalAddress.String()
	}
	if c.RemoteAddress.IsValid() {
		g.Remote = netip.AddrPortFrom(c.RemoteAddress, c.RemotePort).String()
	}
	if c.Joined != nil {
		g.JoinedEvent, g.JoinedRec = c.Joined.EventID, c.Joined.RecordID
	}
	if c.Replaces != nil {
		g.ReplacesEv, g.ReplacesRec = c.Replaces.EventID, c.Replaces.RecordID
	}
	return g
}

// goldenCases lists every sample with the decoder options its recording
// needs (time zones established from the samples themselves, see
// testdata/winevents/SOURCES.md) and the counts it must give.
var goldenCases = []struct {
	file  string
	zones map[string]*time.Location
	want  Result
}{
	{file: "mdecrevoisier_2004_any_any_rule_created.xml", want: Result{Read: 1, Relevant: 1, Emitted: 1}},
	{file: "mdecrevoisier_2004_rule_created_by_powershell.xml", want: Result{Read: 1, Relevant: 1, Emitted: 1}},
	{file: "mdecrevoisier_4688_5447_4950_firewall_disabled.subset.xml", want: Result{Read: 30, Relevant: 22, Skipped: 8, Emitted: 4}},
	{file: "mdecrevoisier_openssh_4_server_listening.xml", want: Result{Read: 6, Skipped: 6}},
	{file: "otrf_cmd_netsh_fw_mod_open_ports.subset.jsonl", zones: map[string]*time.Location{"WORKSTATION5": time.FixedZone("UTC+8", 8*3600)},
		want: Result{Read: 15, Relevant: 10, Skipped: 5, Emitted: 2}},
	{file: "otrf_empire_enable_rdp.winlogbeat67.subset.jsonl", want: Result{Read: 244, Relevant: 136, Skipped: 108, Emitted: 50}},
	{file: "otrf_nxlog_wec_5031_5154_excel.subset.jsonl", zones: theshire, want: Result{Read: 6, Relevant: 2, Skipped: 4, Emitted: 2}},
	{file: "otrf_nxlog_wec_firewall_rule_churn.subset.jsonl", zones: theshire, want: Result{Read: 479, Relevant: 478, Skipped: 1, Emitted: 342}},
	{file: "otrf_nxlog_wec_psexec_service_install.subset.jsonl", zones: theshire, want: Result{Read: 31, Relevant: 28, Skipped: 3, Emitted: 22}},
	{file: "otrf_psh_powershell_httplistener.subset.jsonl", want: Result{Read: 5, Relevant: 4, Skipped: 1, Emitted: 4}},
	{file: "otrf_psh_python_webserver.subset.jsonl", want: Result{Read: 26, Relevant: 17, Skipped: 9, Emitted: 9}},
	{file: "psmths_2004_2071_2006_5156_examples.xml", want: Result{Read: 6, Relevant: 5, Skipped: 1, Emitted: 5}},
}

var theshire = map[string]*time.Location{"*.theshire.local": time.FixedZone("UTC-4", -4*3600)}

func TestGoldenSamples(t *testing.T) {
	for _, tc := range goldenCases {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(sampleDir, tc.file)
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			d := NewDecoder(Options{Zones: tc.zones})
			var got bytes.Buffer
			enc := json.NewEncoder(&got)
			enc.SetEscapeHTML(false)
			res, err := d.DecodeReader(f, func(c ExposureChange) {
				if err := enc.Encode(toGolden(c)); err != nil {
					t.Fatal(err)
				}
			})
			if err != nil {
				t.Fatalf("DecodeReader: %v", err)
			}
			if res.Read != tc.want.Read || res.Relevant != tc.want.Relevant || res.Skipped != tc.want.Skipped ||
				res.Duplicates != tc.want.Duplicates || res.Rejected != tc.want.Rejected || res.Emitted != tc.want.Emitted {
				t.Errorf("result = %+v, want %+v", res, tc.want)
			}

			// The whole file as one payload gives the same changes.
			payload, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			changes, res2 := NewDecoder(Options{Zones: tc.zones}).Decode(payload)
			var again bytes.Buffer
			enc2 := json.NewEncoder(&again)
			enc2.SetEscapeHTML(false)
			for _, c := range changes {
				_ = enc2.Encode(toGolden(c))
			}
			if !bytes.Equal(got.Bytes(), again.Bytes()) || res2.Read != res.Read {
				t.Errorf("Decode of the whole file differs from DecodeReader (read %d vs %d)", res2.Read, res.Read)
			}

			golden := filepath.Join(sampleDir, "golden", tc.file+".golden.jsonl")
			if *update {
				if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(golden, got.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden (run go test -run TestGoldenSamples -update and review it): %v", err)
			}
			if !bytes.Equal(got.Bytes(), want) {
				t.Errorf("changes differ from %s:\n%s", golden, lineDiff(want, got.Bytes()))
			}
		})
	}
}

func lineDiff(want, got []byte) string {
	wl := bytes.Split(want, []byte("\n"))
	gl := bytes.Split(got, []byte("\n"))
	var b bytes.Buffer
	for i := 0; i < len(wl) || i < len(gl); i++ {
		var w, g []byte
		if i < len(wl) {
			w = wl[i]
		}
		if i < len(gl) {
			g = gl[i]
		}
		if !bytes.Equal(w, g) {
			fmt.Fprintf(&b, "line %d\n- %s\n+ %s\n", i+1, w, g)
			if b.Len() > 4000 {
				break
			}
		}
	}
	return b.String()
}

// TestChurnLooksBenign checks the benign baseline: Windows' own AppX rule
// churn at logon is recognisable as such and never opens a port.
func TestChurnLooksBenign(t *testing.T) {
	payload, err := os.ReadFile(filepath.Join(sampleDir, "otrf_nxlog_wec_firewall_rule_churn.subset.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	changes, _ := NewDecoder(Options{Zones: theshire}).Decode(payload)
	rules := 0
	for _, c := range changes {
		switch c.Kind {
		case KindRuleAdded, KindRuleModified, KindRuleEnabled, KindRuleDeleted:
			rules++
			if c.Actor != ActorSystem || !c.WindowsManaged {
				t.Errorf("rule change not attributed to Windows: %+v", c)
			}
			if c.Opens() {
				t.Errorf("benign churn rule opens ports: %s %q %s", c.Kind, c.RuleName, c.Ports)
			}
		}
	}
	if rules != 84 {
		t.Errorf("rule changes = %d, want 84 (82 x 2004 + 2 x 2006; the 4946/4948 are redundant)", rules)
	}
}
