// Package testenv gives tests the real services they run against. Azurite,
// the Azure Storage emulator, is started once per test binary from the
// project's pinned copy (deploy/azurite, installed by `make deps`), or taken
// from CPVREFRESH_AZURITE when that names a running one. The Service Bus
// peer (deploy/sbpeer, a wire-level AMQP 1.0 stand-in for Azure Service
// Bus) is likewise started once per test binary by ServiceBus. Tests never
// skip because either is missing: they fail and say how to install it.
package testenv

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// DevAccountKey is Azurite's well-known development account key (public,
// documented by Microsoft; not a secret).
const DevAccountKey = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="

// ConnectionString returns the explicit devstoreaccount1 connection string
// for Azurite's queue and table endpoints. (The Go SDKs refuse
// UseDevelopmentStorage=true, and an IP host gives the path-style URLs
// Azurite expects.)
func ConnectionString(queueURL, tableURL string) string {
	return "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=" + DevAccountKey +
		";QueueEndpoint=" + queueURL + "/devstoreaccount1;TableEndpoint=" + tableURL + "/devstoreaccount1;"
}

// Storage is a running Azurite.
type Storage struct {
	QueueURL         string // e.g. http://127.0.0.1:10001
	TableURL         string // e.g. http://127.0.0.1:10002
	ConnectionString string
	Dir              string // its data folder; empty when not started by this package
	cmd              *exec.Cmd
}

var (
	azOnce sync.Once
	az     *Storage
	azErr  error
)

// Azurite returns the test binary's Azurite, starting it on the first call.
// The process is killed when the test binary exits (Pdeathsig).
func Azurite(t testing.TB) *Storage {
	t.Helper()
	azOnce.Do(func() { az, azErr = startShared() })
	if azErr != nil {
		t.Fatalf("testenv: azurite: %v", azErr)
	}
	return az
}

func startShared() (*Storage, error) {
	if cs := os.Getenv("CPVREFRESH_AZURITE"); cs != "" {
		return &Storage{ConnectionString: cs}, nil
	}
	// The shared instance keeps its data in memory: faster, and nothing
	// needs it after the test binary exits.
	return start("", true)
}

// AzuriteBin finds the pinned azurite launcher under deploy/azurite.
func AzuriteBin() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(root, "deploy", "azurite", "node_modules", ".bin", "azurite")
	if _, err := os.Stat(bin); err != nil {
		return "", fmt.Errorf("%s is missing: run `make deps` (npm ci in deploy/azurite) first", bin)
	}
	return bin, nil
}

var listening = regexp.MustCompile(`Azurite (Queue|Table) service is successfully listening at (http://\S+)`)

// StartAzurite starts a new Azurite keeping its data in dir, on free ports,
// and waits until its queue and table services listen. It is killed when
// the calling process exits; Stop ends it earlier. Starting it again on the
// same dir finds the data it had (disk persistence).
func StartAzurite(dir string) (*Storage, error) { return start(dir, false) }

func start(dir string, inMemory bool) (*Storage, error) {
	bin, err := AzuriteBin()
	if err != nil {
		return nil, err
	}
	args := []string{"--blobPort", "0", "--queuePort", "0", "--tablePort", "0",
		"--blobHost", "127.0.0.1", "--queueHost", "127.0.0.1", "--tableHost", "127.0.0.1",
		"--skipApiVersionCheck", "--loose", "--disableTelemetry"}
	if inMemory {
		args = append(args, "--inMemoryPersistence")
	} else {
		args = append(args, "--location", dir)
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &Storage{Dir: dir, cmd: cmd}
	found := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(out)
		var log []string
		for sc.Scan() {
			line := sc.Text()
			if len(log) < 50 {
				log = append(log, line)
			}
			if m := listening.FindStringSubmatch(line); m != nil {
				if m[1] == "Queue" {
					s.QueueURL = strings.TrimRight(m[2], "/")
				} else {
					s.TableURL = strings.TrimRight(m[2], "/")
				}
				if s.QueueURL != "" && s.TableURL != "" {
					found <- nil
				}
			}
		}
		found <- fmt.Errorf("azurite exited before listening:\n%s", strings.Join(log, "\n"))
	}()
	select {
	case err := <-found:
		if err != nil {
			_ = cmd.Process.Kill()
			return nil, err
		}
	case <-time.After(60 * time.Second):
		_ = cmd.Process.Kill()
		return nil, errors.New("azurite did not start within 60s")
	}
	s.ConnectionString = ConnectionString(s.QueueURL, s.TableURL)
	return s, nil
}

// Stop kills an Azurite started by StartAzurite and waits for it to exit.
func (s *Storage) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	_ = s.cmd.Wait()
}

// RepoRoot walks up from the working directory to the folder with go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// Name returns a queue/table-safe unique name with prefix (lower-case
// letters and digits, at most 40 characters), so tests sharing one Azurite
// do not see each other's data.
func Name(prefix string) string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	n := strings.ToLower(prefix) + hex.EncodeToString(b[:])
	if len(n) > 40 {
		n = n[len(n)-40:]
	}
	return n
}
