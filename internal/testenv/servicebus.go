package testenv

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"syscall"
	"testing"
	"time"
)

// ServiceBusPeer is a running deploy/sbpeer: a wire-level AMQP 1.0 peer that
// speaks enough of Azure Service Bus for the Go SDK (azservicebus), started
// with Node from the project's pinned rhea (installed by `make deps`).
type ServiceBusPeer struct {
	// ConnectionString is a development-emulator connection string for the
	// peer (plain AMQP, SASL ANONYMOUS). Its key is a placeholder.
	ConnectionString string
	// Control is the peer's HTTP control endpoint, e.g. http://127.0.0.1:PORT.
	Control string

	// stdin stays open (and referenced, so no finalizer closes it) for the
	// life of the test binary: the peer exits when it closes.
	stdin io.WriteCloser
}

var (
	sbOnce sync.Once
	sb     *ServiceBusPeer
	sbErr  error
)

// ServiceBus returns the test binary's Service Bus peer, starting it on the
// first call. It fails (never skips) when node or deploy/sbpeer/node_modules
// is missing. The peer exits with the test binary: its standard input
// closes (and Pdeathsig as well). TESTENV_SBPEER_LOG=1 shows the peer's
// standard error (with DEBUG=rhea:frames, every AMQP frame).
func ServiceBus(t testing.TB) *ServiceBusPeer {
	t.Helper()
	sbOnce.Do(func() { sb, sbErr = startServiceBusPeer() })
	if sbErr != nil {
		t.Fatalf("testenv: sbpeer: %v", sbErr)
	}
	return sb
}

var sbListening = regexp.MustCompile(`sbpeer listening amqp=(\d+) control=(\d+)`)

func startServiceBusPeer() (*ServiceBusPeer, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "deploy", "sbpeer")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "rhea")); err != nil {
		return nil, fmt.Errorf("%s/node_modules is missing: run `make deps` (npm ci in deploy/sbpeer) first", dir)
	}
	node, err := exec.LookPath("node")
	if err != nil {
		return nil, fmt.Errorf("node is not installed: %w", err)
	}
	cmd := exec.Command(node, filepath.Join(dir, "peer.js"), "--port", "0")
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	// Standard error goes to a file (a file, not a Go writer, so that no
	// goroutine copies it), read when the peer exits before listening.
	stderr, err := os.CreateTemp("", "sbpeer-stderr-")
	if err != nil {
		return nil, err
	}
	defer func() {
		_ = stderr.Close()
		_ = os.Remove(stderr.Name())
	}()
	cmd.Stderr = stderr
	if os.Getenv("TESTENV_SBPEER_LOG") != "" {
		cmd.Stderr = os.Stderr
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", node, err)
	}
	found := make(chan []string, 1)
	go scanPeerOutput(out, found)
	timer := time.NewTimer(30 * time.Second)
	defer timer.Stop()
	select {
	case m, ok := <-found:
		if !ok {
			_ = cmd.Wait()
			msg, _ := os.ReadFile(stderr.Name())
			return nil, fmt.Errorf("peer exited before listening: %s", msg)
		}
		return &ServiceBusPeer{
			ConnectionString: "Endpoint=sb://127.0.0.1:" + m[1] + ";SharedAccessKeyName=x;SharedAccessKey=y;UseDevelopmentEmulator=true",
			Control:          "http://127.0.0.1:" + m[2],
			stdin:            stdin,
		}, nil
	case <-timer.C:
		_ = cmd.Process.Kill()
		return nil, errors.New("peer did not listen within 30s")
	}
}

// scanPeerOutput reads the peer's standard output for as long as the peer
// runs (the life of the test binary: LeakOptions names it) and sends found
// the ports it listens on; found closes when the peer exits.
func scanPeerOutput(out io.Reader, found chan<- []string) {
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if m := sbListening.FindStringSubmatch(sc.Text()); m != nil {
			found <- m
		}
	}
	close(found)
}

// ConfigureQueue sets a queue's lock duration and max delivery count on the
// peer (creating the queue), as an operator does on a namespace; the
// duplicate detection window is 10 minutes. A zero lock or maxDelivery
// keeps the peer's default (60s, 10). Configure a queue before a client
// first uses it.
func (p *ServiceBusPeer) ConfigureQueue(t testing.TB, name string, lock time.Duration, maxDelivery int) {
	t.Helper()
	props := map[string]int64{"duplicateWindowMs": (10 * time.Minute).Milliseconds()}
	if lock > 0 {
		props["lockDurationMs"] = lock.Milliseconds()
	}
	if maxDelivery > 0 {
		props["maxDeliveryCount"] = int64(maxDelivery)
	}
	body, err := json.Marshal(props)
	if err != nil {
		t.Fatal(err)
	}
	p.control(t, http.MethodPut, name, body, http.StatusNoContent, nil)
}

// control makes one request to the peer's control endpoint about queue
// name, wants status, and decodes the JSON answer into out (unless nil).
func (p *ServiceBusPeer) control(t testing.TB, method, name string, body []byte, status int, out any) {
	t.Helper()
	req, err := http.NewRequestWithContext(t.Context(), method, p.Control+"/queues/"+name, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("testenv: %s peer queue %s: %v", method, name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != status {
		msg, _ := io.ReadAll(resp.Body)
		t.Fatalf("testenv: %s peer queue %s: %s %s", method, name, resp.Status, msg)
	}
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatalf("testenv: %s peer queue %s: %v", method, name, err)
		}
	}
}

// PeerQueue is one queue's state on the peer, as its control endpoint
// reports it: messages by state, and the operations clients asked of the
// queue (Ops) and of its dead-letter queue (DeadLetterOps) by kind ("send",
// "completed", "abandoned", "released", "dead-letter", "renew-lock",
// "peek-message", "update-disposition", ...). A receive only adds link
// credit, which the peer does not count.
type PeerQueue struct {
	Active, Scheduled, Locked, DeadLetter int
	Ops, DeadLetterOps                    map[string]int
}

// Queue reads a queue's state from the peer (creating the queue if it is
// new).
func (p *ServiceBusPeer) Queue(t testing.TB, name string) PeerQueue {
	t.Helper()
	var q PeerQueue
	p.control(t, http.MethodGet, name, nil, http.StatusOK, &q)
	return q
}
