package e2e

// JSON and bdev queries the rpc.py compatibility tests share.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// objectKeys returns the keys of a JSON object in the order they appear.
func objectKeys(t *testing.T, raw []byte) []string {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(raw))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", raw)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, tok.(string))
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			t.Fatal(err)
		}
	}
	return keys
}

// member returns the raw value of key in a JSON object.
func member(t *testing.T, raw []byte, key string) json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("not a JSON object: %v: %s", err, raw)
	}
	v, ok := m[key]
	if !ok {
		t.Fatalf("no %q in %s", key, raw)
	}
	return v
}

func compactJSON(t *testing.T, raw []byte) string {
	t.Helper()
	var b bytes.Buffer
	if err := json.Compact(&b, raw); err != nil {
		t.Fatalf("invalid JSON: %v: %s", err, raw)
	}
	return b.String()
}

// expectJSON checks that raw is exactly want (as compact JSON, key order
// included).
func expectJSON(t *testing.T, what string, raw []byte, want string) {
	t.Helper()
	if got := compactJSON(t, raw); got != compactJSON(t, []byte(want)) {
		t.Fatalf("%s:\n got %s\nwant %s", what, got, compactJSON(t, []byte(want)))
	}
}

// expectPrefixJSON checks raw against want, an object or an array of
// objects given as rpc.md shows it: each object must hold rpc.md's members
// first, in its order and with its values. blockcache's own additions (e.g.
// fallback_pt) may follow them.
func expectPrefixJSON(t *testing.T, what string, raw []byte, want string) {
	t.Helper()
	var gotElems, wantElems []json.RawMessage
	if strings.HasPrefix(strings.TrimSpace(want), "[") {
		if json.Unmarshal(raw, &gotElems) != nil || json.Unmarshal([]byte(want), &wantElems) != nil || len(gotElems) != len(wantElems) {
			t.Fatalf("%s:\n got %s\nwant %s", what, compactJSON(t, raw), compactJSON(t, []byte(want)))
		}
	} else {
		gotElems, wantElems = []json.RawMessage{raw}, []json.RawMessage{json.RawMessage(want)}
	}
	for i := range gotElems {
		g, w := compactJSON(t, gotElems[i]), strings.TrimSuffix(compactJSON(t, wantElems[i]), "}")
		if g != w+"}" && !strings.HasPrefix(g, w+",") {
			t.Fatalf("%s:\n got %s\nwant %s (further members allowed only after these)", what, compactJSON(t, raw), compactJSON(t, []byte(want)))
		}
	}
}

// getBdev returns the one bdev bdev_get_bdevs names, and the raw object.
func (d *Daemon) getBdev(t *testing.T, name string) (bdevInfo, json.RawMessage) {
	t.Helper()
	var raws []json.RawMessage
	d.CallInto(t, "bdev_get_bdevs", map[string]any{"name": name}, &raws)
	if len(raws) != 1 {
		t.Fatalf("bdev_get_bdevs %s: %d elements, want 1", name, len(raws))
	}
	var b bdevInfo
	if err := json.Unmarshal(raws[0], &b); err != nil {
		t.Fatal(err)
	}
	return b, raws[0]
}

// expectClaimed checks claimed and claim_type of a bdev, raw: claim_type is
// present only when claimed.
func (d *Daemon) expectClaimed(t *testing.T, name string, claimed bool) {
	t.Helper()
	b, raw := d.getBdev(t, name)
	hasType := slices.Contains(objectKeys(t, raw), "claim_type")
	if b.Claimed != claimed || hasType != claimed || (claimed && b.ClaimType != "exclusive_write") {
		t.Fatalf("bdev %s: claimed %v claim_type %q (present %v), want claimed %v%s", name, b.Claimed, b.ClaimType, hasType, claimed,
			map[bool]string{true: " with claim_type exclusive_write", false: " and no claim_type"}[claimed])
	}
}

// bdevNames lists bdev_get_bdevs' names.
func (d *Daemon) bdevNames(t *testing.T) []string {
	t.Helper()
	var all []bdevInfo
	d.CallInto(t, "bdev_get_bdevs", nil, &all)
	var names []string
	for _, b := range all {
		names = append(names, b.Name)
	}
	return names
}

type ocfBdev struct {
	Name    string `json:"name"`
	Started bool   `json:"started"`
	Cache   struct {
		Name     string `json:"name"`
		Attached bool   `json:"attached"`
	} `json:"cache"`
	Core struct {
		Name     string `json:"name"`
		Attached bool   `json:"attached"`
	} `json:"core"`
}

func (d *Daemon) ocfBdevs(t *testing.T, filter string) []ocfBdev {
	t.Helper()
	var p any
	if filter != "" {
		p = map[string]any{"name": filter}
	}
	var out []ocfBdev
	d.CallInto(t, "bdev_ocf_get_bdevs", p, &out)
	return out
}

// configEntries returns framework_get_config's raw entries for a subsystem.
func (d *Daemon) configEntries(t *testing.T, subsystem string) []json.RawMessage {
	t.Helper()
	var out []json.RawMessage
	d.CallInto(t, "framework_get_config", map[string]any{"name": subsystem, "with_batches": false}, &out)
	return out
}

// configEntry finds the entry of method whose params name is name.
func (d *Daemon) configEntry(t *testing.T, method, nameKey, name string) json.RawMessage {
	t.Helper()
	for _, e := range d.configEntries(t, "bdev") {
		var m struct {
			Method string                     `json:"method"`
			Params map[string]json.RawMessage `json:"params"`
		}
		if err := json.Unmarshal(e, &m); err != nil {
			t.Fatal(err)
		}
		if m.Method == method && string(m.Params[nameKey]) == fmt.Sprintf("%q", name) {
			return member(t, e, "params")
		}
	}
	t.Fatalf("framework_get_config bdev has no %s entry for %s", method, name)
	return nil
}
