package deploy

import (
	"bytes"
	"fmt"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/kustomize/api/krusty"
	kustypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/cpvrefresh/cpvrefresh/internal/config"
	"github.com/cpvrefresh/cpvrefresh/internal/cpvtype"
)

// The custom resources below have no Go types cheap enough to import (KEDA's
// and the Prometheus Operator's modules pull in a controller runtime). These
// minimal structs mirror their published schemas (keda.sh/v1alpha1
// ScaledObject and TriggerAuthentication, monitoring.coreos.com/v1
// ServiceMonitor) for the fields the manifests use, so that strict decoding
// still rejects a misspelt or misplaced field.

type scaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              scaledObjectSpec `json:"spec"`
}

type scaledObjectSpec struct {
	ScaleTargetRef  *scaleTarget        `json:"scaleTargetRef,omitempty"`
	PollingInterval *int32              `json:"pollingInterval,omitempty"`
	CooldownPeriod  *int32              `json:"cooldownPeriod,omitempty"`
	MinReplicaCount *int32              `json:"minReplicaCount,omitempty"`
	MaxReplicaCount *int32              `json:"maxReplicaCount,omitempty"`
	Advanced        *scaledObjectAdv    `json:"advanced,omitempty"`
	Triggers        []scaleTriggerEntry `json:"triggers,omitempty"`
}

type scaleTarget struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Name       string `json:"name"`
}

type scaledObjectAdv struct {
	RestoreToOriginalReplicaCount bool `json:"restoreToOriginalReplicaCount,omitempty"`
	HorizontalPodAutoscalerConfig *struct {
		Name     string                                         `json:"name,omitempty"`
		Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
	} `json:"horizontalPodAutoscalerConfig,omitempty"`
}

type scaleTriggerEntry struct {
	Type              string            `json:"type"`
	Name              string            `json:"name,omitempty"`
	Metadata          map[string]string `json:"metadata"`
	AuthenticationRef *struct {
		Name string `json:"name"`
		Kind string `json:"kind,omitempty"`
	} `json:"authenticationRef,omitempty"`
}

type triggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		PodIdentity *struct {
			Provider   string `json:"provider"`
			IdentityID string `json:"identityId,omitempty"`
		} `json:"podIdentity,omitempty"`
	} `json:"spec"`
}

type serviceMonitor struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              struct {
		JobLabel          string               `json:"jobLabel,omitempty"`
		Selector          metav1.LabelSelector `json:"selector"`
		NamespaceSelector *struct {
			Any        bool     `json:"any,omitempty"`
			MatchNames []string `json:"matchNames,omitempty"`
		} `json:"namespaceSelector,omitempty"`
		Endpoints []struct {
			Port          string `json:"port,omitempty"`
			Path          string `json:"path,omitempty"`
			Scheme        string `json:"scheme,omitempty"`
			Interval      string `json:"interval,omitempty"`
			ScrapeTimeout string `json:"scrapeTimeout,omitempty"`
		} `json:"endpoints"`
	} `json:"spec"`
}

// kinds maps apiVersion/kind to a new value to decode a document into.
var kinds = map[string]func() any{
	"v1/ConfigMap":                                  func() any { return new(corev1.ConfigMap) },
	"v1/Namespace":                                  func() any { return new(corev1.Namespace) },
	"v1/Service":                                    func() any { return new(corev1.Service) },
	"v1/ServiceAccount":                             func() any { return new(corev1.ServiceAccount) },
	"apps/v1/Deployment":                            func() any { return new(appsv1.Deployment) },
	"policy/v1/PodDisruptionBudget":                 func() any { return new(policyv1.PodDisruptionBudget) },
	"keda.sh/v1alpha1/ScaledObject":                 func() any { return new(scaledObject) },
	"keda.sh/v1alpha1/TriggerAuthentication":        func() any { return new(triggerAuthentication) },
	"monitoring.coreos.com/v1/ServiceMonitor":       func() any { return new(serviceMonitor) },
	"monitoring.coreos.com/v1/PrometheusRule":       func() any { return new(prometheusRule) },
	"kustomize.config.k8s.io/v1beta1/Kustomization": func() any { return new(kustypes.Kustomization) },
}

// decode reads one YAML document strictly: an unknown kind, an unknown or
// duplicate field, or a value of the wrong type is an error.
func decode(doc []byte) (any, error) {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return nil, err
	}
	newObj, ok := kinds[tm.APIVersion+"/"+tm.Kind]
	if !ok {
		return nil, fmt.Errorf("unexpected apiVersion %q kind %q", tm.APIVersion, tm.Kind)
	}
	obj := newObj()
	if err := yaml.UnmarshalStrict(doc, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	return obj, nil
}

var docSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

// documents splits a YAML stream, dropping documents with nothing but comments.
func documents(data []byte) [][]byte {
	var docs [][]byte
	for _, d := range docSeparator.Split(string(data), -1) {
		for _, line := range strings.Split(d, "\n") {
			if t := strings.TrimSpace(line); t != "" && !strings.HasPrefix(t, "#") {
				docs = append(docs, []byte(d))
				break
			}
		}
	}
	return docs
}

// TestManifestFilesDecodeStrictly decodes every YAML document under
// kubernetes/ as it is written: resources, patches and kustomizations.
func TestManifestFilesDecodeStrictly(t *testing.T) {
	t.Parallel()
	var files []string
	err := filepath.WalkDir("kubernetes", func(path string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 10 {
		t.Fatalf("found only %d manifest files under kubernetes/: %q", len(files), files)
	}
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			docs := documents(data)
			if len(docs) == 0 {
				t.Fatal("no YAML document")
			}
			for i, doc := range docs {
				if _, err := decode(doc); err != nil {
					t.Errorf("document %d: %v", i+1, err)
				}
			}
		})
	}
}

// TestEnvFilesNameRealSettings checks the ConfigMap sources: every key is a
// setting of the daemons that read that ConfigMap, and none is a secret.
func TestEnvFilesNameRealSettings(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		file string
		cfgs []any
	}{
		{"kubernetes/base/common.env", []any{&config.Common{}}},
		{"kubernetes/base/worker.env", []any{&config.Worker{}}},
		{"kubernetes/base/dispatcher.env", []any{&config.Dispatcher{}}},
	} {
		t.Run(tc.file, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(tc.file)
			if err != nil {
				t.Fatal(err)
			}
			fields := referenceOf(tc.cfgs...)
			for _, line := range strings.Split(string(data), "\n") {
				if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
					continue
				}
				name, _, ok := strings.Cut(line, "=")
				if !ok {
					t.Errorf("line %q is not NAME=value", line)
					continue
				}
				f, known := fields[name]
				switch {
				case !known:
					t.Errorf("%s is not a setting of these daemons (typo?)", name)
				case f.Secret:
					t.Errorf("%s is a secret: reference it from a Secret, not a ConfigMap", name)
				}
			}
		})
	}
}

func referenceOf(cfgs ...any) map[string]config.Field {
	m := map[string]config.Field{}
	for _, c := range cfgs {
		for _, f := range config.Reference(c) {
			m[f.Env] = f
		}
	}
	return m
}

// cluster is one kustomization's rendered output, decoded.
type cluster struct {
	deployments     map[string]*appsv1.Deployment
	services        map[string]*corev1.Service
	configMaps      map[string]*corev1.ConfigMap
	serviceAccounts map[string]*corev1.ServiceAccount
	pdbs            map[string]*policyv1.PodDisruptionBudget
	scaledObjects   map[string]*scaledObject
	triggerAuths    map[string]*triggerAuthentication
	serviceMonitors map[string]*serviceMonitor
	prometheusRules map[string]*prometheusRule
	namespaces      map[string]*corev1.Namespace
	namespace       string
}

// render builds a kustomization with kustomize's own library (what
// `kubectl apply -k` runs) and decodes every resource strictly.
func render(t *testing.T, dir string) *cluster {
	t.Helper()
	k := krusty.MakeKustomizer(krusty.MakeDefaultOptions())
	rm, err := k.Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		t.Fatalf("kustomize build %s: %v", dir, err)
	}
	c := &cluster{
		deployments: map[string]*appsv1.Deployment{}, services: map[string]*corev1.Service{},
		configMaps: map[string]*corev1.ConfigMap{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, scaledObjects: map[string]*scaledObject{},
		triggerAuths: map[string]*triggerAuthentication{}, serviceMonitors: map[string]*serviceMonitor{},
		prometheusRules: map[string]*prometheusRule{}, namespaces: map[string]*corev1.Namespace{},
	}
	namespaces := map[string]bool{}
	for _, res := range rm.Resources() {
		doc, err := res.AsYAML()
		if err != nil {
			t.Fatal(err)
		}
		obj, err := decode(doc)
		if err != nil {
			t.Errorf("%s: rendered %s/%s: %v", dir, res.GetKind(), res.GetName(), err)
			continue
		}
		switch o := obj.(type) {
		case *appsv1.Deployment:
			c.deployments[o.Name] = o
		case *corev1.Service:
			c.services[o.Name] = o
		case *corev1.ConfigMap:
			c.configMaps[o.Name] = o
		case *corev1.ServiceAccount:
			c.serviceAccounts[o.Name] = o
		case *policyv1.PodDisruptionBudget:
			c.pdbs[o.Name] = o
		case *scaledObject:
			c.scaledObjects[o.Name] = o
		case *triggerAuthentication:
			c.triggerAuths[o.Name] = o
		case *serviceMonitor:
			c.serviceMonitors[o.Name] = o
		case *prometheusRule:
			c.prometheusRules[o.Name] = o
		case *corev1.Namespace:
			c.namespaces[o.Name] = o
			continue
		default:
			t.Errorf("%s: unexpected rendered %T", dir, obj)
		}
		namespaces[res.GetNamespace()] = true
	}
	if len(namespaces) != 1 {
		t.Errorf("%s: resources in several namespaces: %v", dir, namespaces)
	}
	for ns := range namespaces {
		c.namespace = ns
	}
	return c
}

// overlays lists every kustomization and what it must produce.
var overlays = []struct {
	dir       string
	transport string
	namespace string
}{
	{"kubernetes/base", "storagequeue", ""},
	{"kubernetes/overlays/servicebus", "servicebus", ""},
	{"kubernetes/overlays/production", "storagequeue", "cpvrefresh"},
	{"kubernetes/overlays/keyvault", "storagequeue", ""},
}

// Values the test gives the references a cluster resolves at run time.
const secretPlaceholder = "placeholder-secret-value-0123456789"

// effectiveEnv resolves a container's environment as the kubelet would:
// envFrom ConfigMaps, then env entries. Secret references get a
// placeholder; from lists where each value came from.
func effectiveEnv(t *testing.T, c *cluster, ctr corev1.Container) (env map[string]string, from map[string]string) {
	t.Helper()
	env, from = map[string]string{}, map[string]string{}
	for _, ef := range ctr.EnvFrom {
		if ef.ConfigMapRef == nil || ef.Prefix != "" {
			t.Errorf("%s: envFrom must be a ConfigMap without prefix", ctr.Name)
			continue
		}
		cm, ok := c.configMaps[ef.ConfigMapRef.Name]
		if !ok {
			t.Errorf("%s: envFrom ConfigMap %q is not in the kustomization", ctr.Name, ef.ConfigMapRef.Name)
			continue
		}
		for k, v := range cm.Data {
			env[k], from[k] = v, "configmap"
		}
	}
	for _, e := range ctr.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name], from[e.Name] = e.Value, "literal"
		case e.ValueFrom.SecretKeyRef != nil:
			env[e.Name], from[e.Name] = secretPlaceholder, "secret"
		case e.ValueFrom.ResourceFieldRef != nil:
			from[e.Name] = "resource"
		case e.ValueFrom.FieldRef != nil:
			from[e.Name] = "field"
		default:
			t.Errorf("%s: env %s has an unsupported source", ctr.Name, e.Name)
		}
	}
	return env, from
}

// runtimeEnv are variables the containers set that are not the daemons'
// settings: the Go runtime's.
var runtimeEnv = map[string]bool{"GOMEMLIMIT": true}

func listenPort(t *testing.T, addr string) int32 {
	t.Helper()
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		t.Fatalf("listen address %q: %v", addr, err)
	}
	return int32(n)
}

func defaultOf(t *testing.T, cfg any, env string) string {
	t.Helper()
	for _, f := range config.Reference(cfg) {
		if f.Env == env {
			return f.Default
		}
	}
	t.Fatalf("%s is not a setting", env)
	return ""
}

// daemon describes what the manifests run: the config struct of each
// container, by container name.
type daemon struct {
	deployment string
	binary     string
	newConfig  func() any
	listenEnv  string
}

var daemons = map[string]daemon{
	"worker":     {"cpvrefresh-worker", "/usr/local/bin/worker", func() any { return new(config.Worker) }, "CPV_WORKER_LISTEN"},
	"dispatcher": {"cpvrefresh-dispatcher", "/usr/local/bin/dispatcher", func() any { return new(config.Dispatcher) }, "CPV_DISPATCHER_LISTEN"},
}

type validator interface{ Validate() error }

// TestKustomizationsAgreeWithTheCode renders every kustomization and checks
// it against the daemons' configuration: the variables exist, the daemons'
// own validation accepts what the containers get, secrets come from
// Secrets, probes and ports match the listeners, the grace period outlasts
// the worker's, and KEDA watches the queue the workers read.
func TestKustomizationsAgreeWithTheCode(t *testing.T) {
	t.Parallel()
	for _, ov := range overlays {
		t.Run(ov.dir, func(t *testing.T) {
			t.Parallel()
			c := render(t, ov.dir)
			if c.namespace != ov.namespace {
				t.Errorf("namespace = %q, want %q", c.namespace, ov.namespace)
			}
			if ov.namespace != "" {
				if _, ok := c.namespaces[ov.namespace]; !ok {
					t.Errorf("the overlay sets namespace %q but does not create it", ov.namespace)
				}
			}
			names := slices.Sorted(func(yield func(string) bool) {
				for n := range c.deployments {
					if !yield(n) {
						return
					}
				}
			})
			if diff := cmp.Diff([]string{"cpvrefresh-dispatcher", "cpvrefresh-worker"}, names); diff != "" {
				t.Fatalf("deployments (-want +got):\n%s", diff)
			}
			cfgs := map[string]any{}
			for name, d := range daemons {
				cfgs[name] = checkDeployment(t, c, name, d, ov.transport)
			}
			checkScaling(t, c, cfgs["worker"].(*config.Worker))
			checkServices(t, c)
		})
	}
}

// checkDeployment checks one daemon's Deployment and returns the
// configuration its container runs with.
func checkDeployment(t *testing.T, c *cluster, name string, d daemon, transport string) any {
	t.Helper()
	dep := c.deployments[d.deployment]
	pod := dep.Spec.Template.Spec
	if len(pod.Containers) != 1 || pod.Containers[0].Name != name {
		t.Fatalf("%s: want one container named %s", d.deployment, name)
	}
	ctr := pod.Containers[0]

	// The image's binary, started explicitly.
	if diff := cmp.Diff([]string{d.binary}, ctr.Command); diff != "" {
		t.Errorf("%s: command (-want +got):\n%s", name, diff)
	}

	// Every variable is a setting of this daemon (or the Go runtime's).
	env, from := effectiveEnv(t, c, ctr)
	fields := referenceOf(d.newConfig())
	for k, src := range from {
		f, known := fields[k]
		switch {
		case runtimeEnv[k]:
		case !known:
			t.Errorf("%s: %s is not a setting of the %s (typo?)", name, k, name)
		case f.Secret && src != "secret":
			t.Errorf("%s: secret %s comes from a %s, want a Secret reference", name, k, src)
		case !f.Secret && src == "secret":
			t.Errorf("%s: %s is not secret but comes from a Secret", name, k)
		}
	}

	// The daemon's own loading and validation accept what the container gets.
	cfg := d.newConfig()
	getenv := func(k string) string { return env[k] }
	if err := config.Load(cfg, ctr.Args, getenv, name); err != nil {
		t.Fatalf("%s: config.Load refuses the container's settings: %v", name, err)
	}
	if err := cfg.(validator).Validate(); err != nil {
		t.Errorf("%s: the daemon would refuse to start:\n%v", name, err)
	}
	var common *config.Common
	var listen string
	switch v := cfg.(type) {
	case *config.Worker:
		common, listen = &v.Common, v.Listen
	case *config.Dispatcher:
		common, listen = &v.Common, v.Listen
	}
	if common.Transport != transport {
		t.Errorf("%s: transport %q, want %q", name, common.Transport, transport)
	}
	// Identity-based storage: the connection string (default: Azurite) must
	// be cleared, or the daemon would use it instead of the service URLs.
	if common.TableServiceURL == "" || common.StorageConnectionString != "" {
		t.Errorf("%s: want the table service URL with an empty connection string, got URL %q and a connection string set: %v",
			name, common.TableServiceURL, common.StorageConnectionString != "")
	}
	if transport == "storagequeue" && common.QueueServiceURL == "" {
		t.Errorf("%s: no CPV_QUEUE_SERVICE_URL", name)
	}
	if common.AuthMode == "secret" && from["CPV_CLIENT_SECRET"] != "secret" {
		t.Errorf("%s: auth mode secret without CPV_CLIENT_SECRET from a Secret", name)
	}

	// Probes on the listener's default address.
	def := defaultOf(t, d.newConfig(), d.listenEnv)
	if listen != def {
		t.Errorf("%s: listens on %q, want the default %q the probes are written for", name, listen, def)
	}
	port := listenPort(t, def)
	if !slices.ContainsFunc(ctr.Ports, func(p corev1.ContainerPort) bool { return p.ContainerPort == port }) {
		t.Errorf("%s: no container port %d", name, port)
	}
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"startup", ctr.StartupProbe, "/healthz"},
		{"liveness", ctr.LivenessProbe, "/healthz"},
		{"readiness", ctr.ReadinessProbe, "/readyz"},
	} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("%s: no HTTP %s probe", name, p.kind)
			continue
		}
		if got := p.probe.HTTPGet.Path; got != p.path {
			t.Errorf("%s: %s probe path %q, want %q", name, p.kind, got, p.path)
		}
		if got := resolvePort(ctr, p.probe.HTTPGet.Port); got != port {
			t.Errorf("%s: %s probe port %v (%d), want %d", name, p.kind, p.probe.HTTPGet.Port.String(), got, port)
		}
	}

	// Shutdown: the kubelet's SIGKILL comes after the worker's grace period.
	if pod.TerminationGracePeriodSeconds == nil {
		t.Errorf("%s: no terminationGracePeriodSeconds", name)
	} else if w, ok := cfg.(*config.Worker); ok {
		kill := time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
		if kill <= w.ShutdownGrace {
			t.Errorf("worker: terminationGracePeriodSeconds %s must exceed CPV_SHUTDOWN_GRACE %s", kill, w.ShutdownGrace)
		}
	}

	// Replicas: the dispatcher runs two; KEDA owns the workers' count.
	switch name {
	case "dispatcher":
		if dep.Spec.Replicas == nil || *dep.Spec.Replicas != 2 {
			t.Errorf("dispatcher: want 2 replicas, got %v", dep.Spec.Replicas)
		}
	case "worker":
		if dep.Spec.Replicas != nil {
			t.Errorf("worker: replicas %d set, but KEDA owns the count", *dep.Spec.Replicas)
		}
	}

	// Hardening and resources.
	if sc := pod.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
		t.Errorf("%s: pod must set runAsNonRoot", name)
	}
	sc := ctr.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: no container securityContext", name)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: root filesystem must be read-only", name)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: allowPrivilegeEscalation must be false", name)
	case sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, corev1.Capability("ALL")):
		t.Errorf("%s: capabilities must drop ALL", name)
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := ctr.Resources.Requests[r]; !ok {
			t.Errorf("%s: no %s request", name, r)
		}
		if _, ok := ctr.Resources.Limits[r]; !ok {
			t.Errorf("%s: no %s limit", name, r)
		}
	}

	// Azure Workload Identity: the pod label and an annotated service account.
	if got := dep.Spec.Template.Labels["azure.workload.identity/use"]; got != "true" {
		t.Errorf("%s: pod label azure.workload.identity/use = %q, want \"true\"", name, got)
	}
	sa, ok := c.serviceAccounts[pod.ServiceAccountName]
	if !ok {
		t.Errorf("%s: service account %q is not in the kustomization", name, pod.ServiceAccountName)
	} else if id := sa.Annotations["azure.workload.identity/client-id"]; !cpvtype.IsGUID(id) {
		t.Errorf("service account %s: azure.workload.identity/client-id %q is not a GUID", sa.Name, id)
	}

	// A disruption budget covers the pods.
	if !slices.ContainsFunc(mapValues(c.pdbs), func(p *policyv1.PodDisruptionBudget) bool {
		return selects(t, p.Spec.Selector, dep.Spec.Template.Labels)
	}) {
		t.Errorf("%s: no PodDisruptionBudget selects its pods", name)
	}
	if !selects(t, dep.Spec.Selector, dep.Spec.Template.Labels) {
		t.Errorf("%s: the Deployment's selector does not match its pod template", name)
	}
	return cfg
}

func resolvePort(ctr corev1.Container, p intstr.IntOrString) int32 {
	if p.Type == intstr.Int {
		return p.IntVal
	}
	for _, cp := range ctr.Ports {
		if cp.Name == p.StrVal {
			return cp.ContainerPort
		}
	}
	return -1
}

func selects(t *testing.T, sel *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Errorf("selector %v: %v", sel, err)
		return false
	}
	return !s.Empty() && s.Matches(labels.Set(set))
}

func mapValues[K comparable, V any](m map[K]V) []V {
	out := make([]V, 0, len(m))
	for _, v := range m {
		out = append(out, v)
	}
	return out
}

// maxInFlight is Partner Center's limit of 50 requests per second per
// application: with at most this many refreshes at once the workers stay
// under it even if every refresh consented a new tenant (docs/operations.md,
// "Scaling").
const maxInFlight = 50

// maxConsentRate is what the replicas' Partner Center pacers may send
// together (CPV_PARTNER_CENTER_RATE each): under Partner Center's 50
// requests per second per application, with room for the dispatcher's
// calls.
const maxConsentRate = 45

func checkScaling(t *testing.T, c *cluster, w *config.Worker) {
	t.Helper()
	if len(c.scaledObjects) != 1 {
		t.Fatalf("want one ScaledObject, got %d", len(c.scaledObjects))
	}
	so := mapValues(c.scaledObjects)[0]
	if ref := so.Spec.ScaleTargetRef; ref == nil || ref.Name != "cpvrefresh-worker" || (ref.Kind != "" && ref.Kind != "Deployment") {
		t.Errorf("ScaledObject targets %+v, want the worker Deployment", ref)
	}
	if so.Spec.MinReplicaCount == nil || *so.Spec.MinReplicaCount != 0 {
		t.Errorf("minReplicaCount %v, want 0 (scale to zero)", so.Spec.MinReplicaCount)
	}
	if so.Spec.MaxReplicaCount == nil {
		t.Errorf("no maxReplicaCount")
	} else {
		n := int(*so.Spec.MaxReplicaCount) * w.Concurrency
		if rate := float64(*so.Spec.MaxReplicaCount) * w.PartnerCenterRate; w.PartnerCenterRate <= 0 || rate > maxConsentRate {
			t.Errorf("maxReplicaCount %d x CPV_PARTNER_CENTER_RATE %v = %v consents/s, want paced and at most %v",
				*so.Spec.MaxReplicaCount, w.PartnerCenterRate, rate, maxConsentRate)
		}
		if n > maxInFlight {
			t.Errorf("maxReplicaCount %d x CPV_CONCURRENCY %d = %d refreshes in flight, over Partner Center's %d/s",
				*so.Spec.MaxReplicaCount, w.Concurrency, n, maxInFlight)
		}
		// The operations guide quotes the shipped limits.
		ops, err := os.ReadFile("../docs/operations.md")
		if err != nil {
			t.Fatal(err)
		}
		if quote := fmt.Sprintf("%d × %d = %d", *so.Spec.MaxReplicaCount, w.Concurrency, n); !bytes.Contains(ops, []byte(quote)) {
			t.Errorf("docs/operations.md does not quote the shipped limit %q", quote)
		}
	}
	// One trigger per queue the workers read: the work queue and the
	// interactive queue in front of it.
	queues := []string{w.Interactive(), w.Queue}
	if queues[0] == "" {
		queues = queues[1:]
	}
	if len(so.Spec.Triggers) != len(queues) {
		t.Fatalf("want %d triggers (queues %q), got %d", len(queues), queues, len(so.Spec.Triggers))
	}
	per := strconv.Itoa(w.Concurrency)
	var want []scaleTriggerEntry
	for _, q := range queues {
		switch w.Transport {
		case "storagequeue":
			u, err := url.Parse(w.QueueServiceURL)
			if err != nil {
				t.Fatal(err)
			}
			account, _, _ := strings.Cut(u.Hostname(), ".")
			want = append(want, scaleTriggerEntry{Type: "azure-queue", Metadata: map[string]string{
				"queueName": q, "queueLength": per, "accountName": account, "cloud": "AzurePublicCloud",
			}})
		case "servicebus":
			ns, ok := strings.CutSuffix(w.ServiceBusNamespace, ".servicebus.windows.net")
			if !ok {
				t.Errorf("CPV_SERVICEBUS_NAMESPACE %q is not <name>.servicebus.windows.net", w.ServiceBusNamespace)
			}
			want = append(want, scaleTriggerEntry{Type: "azure-servicebus", Metadata: map[string]string{
				"queueName": q, "messageCount": per, "namespace": ns, "cloud": "AzurePublicCloud",
			}})
		}
	}
	got := slices.Clone(so.Spec.Triggers)
	slices.SortFunc(got, func(a, b scaleTriggerEntry) int {
		return strings.Compare(b.Metadata["queueName"], a.Metadata["queueName"])
	})
	slices.SortFunc(want, func(a, b scaleTriggerEntry) int {
		return strings.Compare(b.Metadata["queueName"], a.Metadata["queueName"])
	})
	if diff := cmp.Diff(want, got, cmp.FilterPath(func(p cmp.Path) bool { return p.Last().String() == ".AuthenticationRef" }, cmp.Ignore())); diff != "" {
		t.Errorf("triggers (-want +got):\n%s", diff)
	}
	for _, tr := range so.Spec.Triggers {
		checkTriggerAuth(t, c, tr)
	}
}

// checkTriggerAuth checks that a trigger authenticates with the workload
// identity through a TriggerAuthentication of the kustomization.
func checkTriggerAuth(t *testing.T, c *cluster, tr scaleTriggerEntry) {
	t.Helper()
	if tr.AuthenticationRef == nil {
		t.Fatal("the trigger has no authenticationRef")
	}
	ta, ok := c.triggerAuths[tr.AuthenticationRef.Name]
	switch {
	case !ok:
		t.Errorf("TriggerAuthentication %q is not in the kustomization", tr.AuthenticationRef.Name)
	case ta.Spec.PodIdentity == nil || ta.Spec.PodIdentity.Provider != "azure-workload":
		t.Errorf("TriggerAuthentication %s: want podIdentity provider azure-workload", ta.Name)
	case !cpvtype.IsGUID(ta.Spec.PodIdentity.IdentityID):
		t.Errorf("TriggerAuthentication %s: identityId %q is not a GUID", ta.Name, ta.Spec.PodIdentity.IdentityID)
	}
}

// checkServices checks that Services and ServiceMonitors reach the pods'
// named ports, and that /metrics is scraped on both daemons.
func checkServices(t *testing.T, c *cluster) {
	t.Helper()
	scraped := map[string]bool{}
	for _, sm := range c.serviceMonitors {
		for _, svc := range c.services {
			if !selects(t, &sm.Spec.Selector, svc.Labels) {
				continue
			}
			for _, ep := range sm.Spec.Endpoints {
				if ep.Path != "/metrics" {
					t.Errorf("ServiceMonitor %s: path %q, want /metrics", sm.Name, ep.Path)
				}
				if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == ep.Port }) {
					t.Errorf("ServiceMonitor %s: Service %s has no port %q", sm.Name, svc.Name, ep.Port)
				}
			}
			scraped[svc.Name] = true
		}
	}
	for _, svc := range c.services {
		var pods *appsv1.Deployment
		for _, d := range c.deployments {
			if selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, d.Spec.Template.Labels) {
				pods = d
			}
		}
		if pods == nil {
			t.Errorf("Service %s selects no Deployment's pods", svc.Name)
			continue
		}
		for _, p := range svc.Spec.Ports {
			if resolvePort(pods.Spec.Template.Spec.Containers[0], p.TargetPort) < 0 {
				t.Errorf("Service %s: targetPort %s is not a port of %s", svc.Name, p.TargetPort.String(), pods.Name)
			}
		}
		if !scraped[svc.Name] {
			t.Errorf("Service %s: no ServiceMonitor scrapes it", svc.Name)
		}
	}
	if len(c.services) != 2 {
		t.Errorf("want 2 Services (dispatcher, worker metrics), got %d", len(c.services))
	}
}

// TestConfigurationReferenceIsCurrent fails when docs/configuration.md
// differs from what `go generate ./deploy` (deploy/gen) writes.
func TestConfigurationReferenceIsCurrent(t *testing.T) {
	t.Parallel()
	got, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(ConfigurationReference(), string(got)); diff != "" {
		t.Errorf("docs/configuration.md is stale; run `go generate ./deploy` (-want +got):\n%s", diff)
	}
	// Every setting of both daemons is in it, once.
	for _, cfg := range []any{&config.Worker{}, &config.Dispatcher{}} {
		for _, f := range config.Reference(cfg) {
			if n := strings.Count(string(got), "| `"+f.Env+"` |"); n != 1 {
				t.Errorf("%s appears %d times in the reference, want 1", f.Env, n)
			}
		}
	}
}

// TestDockerfile checks what the manifests rely on: both daemons at the
// paths the containers' commands name, static (CGO off), a non-root user in
// a distroless base, and a module cache for the builder.
func TestDockerfile(t *testing.T) {
	t.Parallel()
	data, err := os.ReadFile("Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	stages := regexp.MustCompile(`(?m)^FROM `).Split(string(data), -1)
	final := stages[len(stages)-1]
	for _, want := range []struct{ text, in, why string }{
		{"golang:${GO_VERSION}", string(data), "golang builder"},
		{"ARG GO_VERSION=1.26", string(data), "Go 1.26 builder"},
		{"CGO_ENABLED=0", string(data), "static binaries"},
		{"-trimpath", string(data), "reproducible paths"},
		{`-ldflags="-s -w"`, string(data), "stripped binaries"},
		{"--mount=type=cache,target=/go/pkg/mod", string(data), "module cache mount"},
		{"./cmd/worker ./cmd/dispatcher", string(data), "both daemons built"},
		{"gcr.io/distroless/static-debian12:nonroot", final, "distroless final stage"},
		{"COPY --from=build /out/worker /out/dispatcher /usr/local/bin/", final, "both daemons in the final stage"},
		{"USER 65532:65532", final, "non-root user (distroless nonroot)"},
	} {
		if !strings.Contains(want.in, want.text) {
			t.Errorf("Dockerfile: want %q (%s)", want.text, want.why)
		}
	}
	for name, d := range daemons {
		if !strings.HasPrefix(d.binary, "/usr/local/bin/") || filepath.Base(d.binary) != name {
			t.Errorf("%s: binary path %q does not match the image layout", name, d.binary)
		}
	}
}

// TestDockerfileLint runs the pinned Dockerfile linter (deploy/dockerfile-lint,
// installed by `make deps`). hadolint is not available from the registries
// this project may use.
func TestDockerfileLint(t *testing.T) {
	t.Parallel()
	lint := filepath.Join("dockerfile-lint", "node_modules", ".bin", "dockerfile-utils")
	if _, err := os.Stat(lint); err != nil {
		t.Fatalf("the Dockerfile linter is not installed (%v): run `make deps` or `npm ci --prefix deploy/dockerfile-lint`", err)
	}
	var out bytes.Buffer
	cmd := exec.Command(lint, "lint", "Dockerfile")
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		t.Errorf("dockerfile-utils lint Dockerfile: %v\n%s", err, out.String())
	}
}
