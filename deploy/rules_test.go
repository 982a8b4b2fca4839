package deploy

import (
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/common/model"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// prometheusRule mirrors the Prometheus Operator's monitoring.coreos.com/v1
// PrometheusRule for the fields the rules use (strict decoding rejects a
// misspelt one).
type prometheusRule struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		Groups []struct {
			Name     string `json:"name"`
			Interval string `json:"interval,omitempty"`
			Rules    []struct {
				Alert         string            `json:"alert,omitempty"`
				Record        string            `json:"record,omitempty"`
				Expr          string            `json:"expr"`
				For           string            `json:"for,omitempty"`
				KeepFiringFor string            `json:"keep_firing_for,omitempty"`
				Labels        map[string]string `json:"labels,omitempty"`
				Annotations   map[string]string `json:"annotations,omitempty"`
			} `json:"rules"`
		} `json:"groups"`
	} `json:"spec"`
}

// metricRef is a metric name in a PromQL expression (the project's own:
// cpv_...), with the label matchers that follow it, if any.
var metricRef = regexp.MustCompile(`\b(cpv_[a-z0-9_]+)(\{[^}]*\})?`)

// registered finds the metric names the code registers: the Name of a
// client_golang *Opts literal and the first argument of prometheus.NewDesc,
// in every Go file that is not a test.
func registered(t *testing.T) map[string]bool {
	t.Helper()
	decl := regexp.MustCompile(`(?:Name:\s*|NewDesc\(\s*)"(cpv_[a-z0-9_]+)"`)
	names := map[string]bool{}
	for _, root := range []string{"../internal", "../cmd"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range decl.FindAllSubmatch(b, -1) {
				names[string(m[1])] = true
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return names
}

// TestAlertRules checks the PrometheusRule every kustomization renders:
// each alert names only metrics the code registers, has a valid duration,
// a severity and its summary and description, and balanced brackets; the
// issue's alerts are all there.
func TestAlertRules(t *testing.T) {
	t.Parallel()
	known := registered(t)
	for _, want := range []string{"cpv_tenants", "cpv_credential_expiry_seconds", "cpv_refresh_duration_seconds"} {
		if !known[want] {
			t.Fatalf("the scan of the code misses %s: it finds %v", want, slices.Sorted(func(yield func(string) bool) {
				for n := range known {
					if !yield(n) {
						return
					}
				}
			}))
		}
	}
	for _, ov := range overlays {
		c := render(t, ov.dir)
		if len(c.prometheusRules) != 1 {
			t.Errorf("%s: %d PrometheusRules, want 1", ov.dir, len(c.prometheusRules))
		}
	}
	c := render(t, "kubernetes/base")
	var alerts []string
	for _, pr := range c.prometheusRules {
		for _, g := range pr.Spec.Groups {
			for _, r := range g.Rules {
				name := r.Alert
				if name == "" {
					t.Errorf("group %s: a rule without an alert name (recording rules are not used)", g.Name)
					continue
				}
				if slices.Contains(alerts, name) {
					t.Errorf("alert %s is defined twice", name)
				}
				alerts = append(alerts, name)
				checkRule(t, name, r.Expr, r.For, r.Labels, r.Annotations, known)
			}
		}
	}
	for _, want := range []string{
		"CPVFailedTenantsRising", "CPVQueueNotDraining", "CPVPoisonMessages", "CPVCredentialExpiring",
		"CPVWorkersAbsent", "CPVCheckRed", "CPVCredentialRotationFailed", "CPVWebhookRegistrationStale",
	} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s", want)
		}
	}
}

func checkRule(t *testing.T, name, expr, dur string, labels, annotations map[string]string, known map[string]bool) {
	t.Helper()
	if strings.TrimSpace(expr) == "" {
		t.Errorf("%s: empty expr", name)
	}
	refs := metricRef.FindAllStringSubmatch(expr, -1)
	if len(refs) == 0 {
		t.Errorf("%s: expr %q reads no cpv_ metric", name, expr)
	}
	for _, m := range refs {
		metric := m[1]
		base := metric
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if b, ok := strings.CutSuffix(metric, suffix); ok && known[b] {
				base = b
			}
		}
		if !known[base] {
			t.Errorf("%s: metric %s is not registered by the code", name, metric)
		}
	}
	for _, pair := range []string{"()", "[]", "{}"} {
		if strings.Count(expr, pair[:1]) != strings.Count(expr, pair[1:]) {
			t.Errorf("%s: unbalanced %s in %q", name, pair, expr)
		}
	}
	if dur != "" {
		if _, err := model.ParseDuration(dur); err != nil {
			t.Errorf("%s: for %q: %v", name, dur, err)
		}
	}
	if s := labels["severity"]; s != "warning" && s != "critical" {
		t.Errorf("%s: severity %q, want warning or critical", name, s)
	}
	for _, a := range []string{"summary", "description"} {
		text := annotations[a]
		if text == "" {
			t.Errorf("%s: no %s annotation", name, a)
		}
		if strings.Count(text, "{{") != strings.Count(text, "}}") {
			t.Errorf("%s: unbalanced template in %s %q", name, a, text)
		}
	}
}
