package stack

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
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

// azuriteStartTimeout bounds how long Azurite may take to listen.
const azuriteStartTimeout = 60 * time.Second

// azuriteStopTimeout bounds a graceful stop before Azurite is killed.
const azuriteStopTimeout = 30 * time.Second

// Azurite is a running Azurite (queue and table services; blob on a port
// nobody uses). Its first start takes ports the kernel chooses and reads
// them from Azurite's output; Restart starts it again on the same ports, so
// that its clients find it where they expect it. Its methods are not safe
// for concurrent use.
type Azurite struct {
	// Dir is its data folder and log (Dir/data, Dir/azurite.log); empty
	// when it keeps its data in memory.
	Dir              string
	QueuePort        int
	TablePort        int
	ConnectionString string

	cmd  *exec.Cmd
	done chan struct{}
	peak int64 // VmHWM of earlier processes, bytes
}

// StartAzurite starts Azurite from the pinned copy in deploy/azurite and
// waits until its queue and table services listen. With dir, it keeps its
// data on disk there (starting it again on the same dir finds the data it
// had) and appends its output to dir/azurite.log; with dir empty, it keeps
// its data in memory (faster; gone when it stops). It dies with the calling
// process; Stop ends it earlier.
func StartAzurite(ctx context.Context, dir string) (*Azurite, error) {
	a := &Azurite{Dir: dir}
	if dir != "" {
		if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
			return nil, fmt.Errorf("stack: azurite: %w", err)
		}
	}
	if err := a.start(ctx); err != nil {
		return nil, err
	}
	a.ConnectionString = ConnectionString(a.QueueURL(), a.TableURL())
	return a, nil
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

// QueueURL is the queue service's base URL.
func (a *Azurite) QueueURL() string { return "http://127.0.0.1:" + strconv.Itoa(a.QueuePort) }

// TableURL is the table service's base URL.
func (a *Azurite) TableURL() string { return "http://127.0.0.1:" + strconv.Itoa(a.TablePort) }

var azuriteListening = regexp.MustCompile(`Azurite (Queue|Table) service is successfully listening at (http://\S+)`)

// start runs Azurite on a.QueuePort and a.TablePort (0: any free port,
// then recorded) and waits until both services listen.
func (a *Azurite) start(ctx context.Context) error {
	bin, err := AzuriteBin()
	if err != nil {
		return fmt.Errorf("stack: azurite: %w", err)
	}
	args := []string{"--blobPort", "0", "--blobHost", "127.0.0.1",
		"--queuePort", strconv.Itoa(a.QueuePort), "--queueHost", "127.0.0.1",
		"--tablePort", strconv.Itoa(a.TablePort), "--tableHost", "127.0.0.1",
		"--silent", "--skipApiVersionCheck", "--loose", "--disableTelemetry"}
	logw, logName := io.Discard, ""
	if a.Dir == "" {
		args = append(args, "--inMemoryPersistence")
	} else {
		args = append(args, "--location", filepath.Join(a.Dir, "data"))
		logName = filepath.Join(a.Dir, "azurite.log")
		f, err := os.OpenFile(logName, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("stack: azurite: %w", err)
		}
		defer func() {
			if a.cmd == nil { // not started: the copier below never runs
				_ = f.Close() // a log file: nothing to do about a failed close
			}
		}()
		logw = f
	}
	cmd := exec.Command(bin, args...)
	// Its own process group, so that a stop reaches whatever node starts;
	// killed with this process whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return fmt.Errorf("stack: azurite: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("stack: start %s: %w", bin, err)
	}
	a.cmd = cmd
	type port struct {
		queue bool
		n     int
	}
	ports := make(chan port, 2)
	exited := make(chan []string, 1)
	go func() {
		// Copies Azurite's output to its log until it exits, and reports
		// the ports it listens on.
		if c, ok := logw.(io.Closer); ok {
			defer func() { _ = c.Close() }() // the log file: nothing to do about a failed close
		}
		sc := bufio.NewScanner(out)
		var head []string // the first lines, for an error when there is no log
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logw, line)
			if len(head) < 50 {
				head = append(head, line)
			}
			if m := azuriteListening.FindStringSubmatch(line); m != nil {
				if u, err := url.Parse(m[2]); err == nil {
					n, _ := strconv.Atoi(u.Port())
					ports <- port{queue: m[1] == "Queue", n: n}
				}
			}
		}
		exited <- head
	}()
	done := make(chan struct{})
	var head []string
	go func() {
		head = <-exited
		_ = cmd.Wait()
		close(done)
	}()
	kill := func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-done
		a.cmd = nil
	}
	t := time.NewTimer(azuriteStartTimeout)
	defer t.Stop()
	for queue, table := false, false; !queue || !table; {
		select {
		case p := <-ports:
			if p.queue {
				a.QueuePort, queue = p.n, true
			} else {
				a.TablePort, table = p.n, true
			}
		case <-done:
			a.cmd = nil
			if logName != "" {
				return fmt.Errorf("stack: azurite exited before listening (see %s)", logName)
			}
			return fmt.Errorf("stack: azurite exited before listening:\n%s", strings.Join(head, "\n"))
		case <-t.C:
			kill()
			return fmt.Errorf("stack: azurite did not listen within %s", azuriteStartTimeout)
		case <-ctx.Done():
			kill()
			return ctx.Err()
		}
	}
	a.done = done
	return nil
}

// Pid is the running Azurite's process id (0 when stopped).
func (a *Azurite) Pid() int {
	if a.cmd == nil || a.cmd.Process == nil {
		return 0
	}
	return a.cmd.Process.Pid
}

// CPUTime is the CPU time the running Azurite has used so far; 0 when it
// is not running.
func (a *Azurite) CPUTime() time.Duration {
	if pid := a.Pid(); pid != 0 {
		return CPUTime(pid)
	}
	return 0
}

// PeakRSS is the largest resident set of the Azurite processes so far, in bytes.
func (a *Azurite) PeakRSS() int64 {
	if pid := a.Pid(); pid != 0 {
		return max(a.peak, PeakRSS(pid))
	}
	return a.peak
}

// Stop ends Azurite gracefully (SIGTERM: it saves its database; it saves
// it only every 5 s otherwise), killing it if it does not exit within 30 s.
func (a *Azurite) Stop() error {
	if a.cmd == nil {
		return nil
	}
	pid := a.cmd.Process.Pid
	a.peak = max(a.peak, PeakRSS(pid))
	var err error
	if terminate(-pid, a.done, azuriteStopTimeout) {
		err = fmt.Errorf("stack: azurite did not stop within %s and was killed", azuriteStopTimeout)
	}
	a.peak = max(a.peak, maxRSS(a.cmd.ProcessState))
	a.cmd, a.done = nil, nil
	return err
}

// Restart stops Azurite gracefully and starts it again on the same ports
// and data folder.
func (a *Azurite) Restart(ctx context.Context) error {
	if a.Dir == "" {
		return errors.New("stack: azurite: a restart of an in-memory Azurite would lose its data")
	}
	if err := a.Stop(); err != nil {
		return err
	}
	return a.start(ctx)
}
