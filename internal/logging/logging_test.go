package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestFormats(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := New(&buf, "auto", "info")
	if err != nil {
		t.Fatal(err)
	}
	log.Info("refresh done", "tenant", "t1")
	log.Debug("hidden")
	var rec map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rec); err != nil {
		t.Fatalf("auto on a non-terminal must be JSON, got %q: %v", buf.String(), err)
	}
	if rec["msg"] != "refresh done" || rec["tenant"] != "t1" {
		t.Fatalf("record = %v", rec)
	}
	buf.Reset()
	log, err = New(&buf, "text", "debug")
	if err != nil {
		t.Fatal(err)
	}
	log.Debug("shown", "n", 1)
	if !strings.Contains(buf.String(), "shown") || strings.Contains(buf.String(), "\x1b[") {
		t.Fatalf("text to a buffer must be plain: %q", buf.String())
	}
	if _, err := New(&buf, "xml", "info"); err == nil {
		t.Fatal("unknown format accepted")
	}
	if _, err := New(&buf, "json", "loud"); err == nil {
		t.Fatal("unknown level accepted")
	}
}
