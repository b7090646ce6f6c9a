package jsontext

import (
	"testing"
)

func TestCompactStyles(t *testing.T) {
	in := "{ \"k\u00e9\" : [ 1.50 , -0, 1e3, true, false, null, \"a\\u00e9\\/<>&\\b\\f\\n\\r\\t\\u0001\\u007f\\ud83d\\ude00\" ] , \"e\":{}, \"l\":[] }"
	for s, want := range map[Style]string{
		SPDK:   `{"k\u00E9":[1.50,-0,1e3,true,false,null,"a\u00E9/<>&\b\f\n\r\t\u0001\u007F\uD83D\uDE00"],"e":{},"l":[]}`,
		Python: `{"k\u00e9":[1.50,-0,1e3,true,false,null,"a\u00e9/<>&\b\f\n\r\t\u0001\u007f\ud83d\ude00"],"e":{},"l":[]}`,
	} {
		got, err := Compact([]byte(in), s)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != want {
			t.Errorf("style %d:\n got %s\nwant %s", s, got, want)
		}
	}
}

func TestCompactRejects(t *testing.T) {
	for _, in := range []string{``, ` `, `{`, `{"a":1}{}`, `[1,]`, `1 2`, `{"a" 1}`} {
		if got, err := Compact([]byte(in), SPDK); err == nil {
			t.Errorf("%q accepted as %s", in, got)
		}
	}
}

func TestAppendStringInvalidUTF8(t *testing.T) {
	if got := string(AppendString(nil, "a\xffb", Python)); got != `"a\ufffdb"` {
		t.Fatalf("got %s", got)
	}
}

func TestIndent(t *testing.T) {
	got, err := Indent([]byte(`{"a":[1,{}],"b":[]}`), Python, 2)
	if err != nil {
		t.Fatal(err)
	}
	want := "{\n  \"a\": [\n    1,\n    {}\n  ],\n  \"b\": []\n}"
	if string(got) != want {
		t.Fatalf("got %q want %q", got, want)
	}
}
