package bench

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/cpvrefresh/cpvrefresh/internal/testenv"
)

// azuriteStartTimeout bounds how long Azurite may take to listen.
const azuriteStartTimeout = 60 * time.Second

// azuriteStopTimeout bounds a graceful stop before Azurite is killed.
const azuriteStopTimeout = 30 * time.Second

// Azurite is an Azurite process keeping its data in Dir, on fixed queue and
// table ports so that it can be restarted where its clients expect it.
// (testenv.StartAzurite picks new ports on every start and stops with
// SIGKILL, which loses up to five seconds of writes: Azurite saves its
// database every 5 s and on SIGTERM.)
type Azurite struct {
	Dir              string
	QueuePort        int
	TablePort        int
	ConnectionString string

	log  string // file receiving its output
	proc *exec.Cmd
	done chan struct{}
	peak int64 // VmHWM of earlier processes, bytes
}

// StartAzurite starts Azurite with its data in dir on free ports.
func StartAzurite(ctx context.Context, dir string) (*Azurite, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	a := &Azurite{Dir: dir, QueuePort: ports[0], TablePort: ports[1], log: filepath.Join(dir, "azurite.log")}
	a.ConnectionString = testenv.ConnectionString(a.QueueURL(), a.TableURL())
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o755); err != nil {
		return nil, fmt.Errorf("bench: azurite: %w", err)
	}
	if err := a.start(ctx); err != nil {
		return nil, err
	}
	return a, nil
}

// QueueURL is the queue service's base URL.
func (a *Azurite) QueueURL() string { return "http://127.0.0.1:" + strconv.Itoa(a.QueuePort) }

// TableURL is the table service's base URL.
func (a *Azurite) TableURL() string { return "http://127.0.0.1:" + strconv.Itoa(a.TablePort) }

func (a *Azurite) start(ctx context.Context) error {
	bin, err := testenv.AzuriteBin()
	if err != nil {
		return fmt.Errorf("bench: azurite: %w", err)
	}
	logf, err := os.OpenFile(a.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("bench: azurite: %w", err)
	}
	cmd := exec.Command(bin, "--blobPort", "0", "--blobHost", "127.0.0.1",
		"--queuePort", strconv.Itoa(a.QueuePort), "--queueHost", "127.0.0.1",
		"--tablePort", strconv.Itoa(a.TablePort), "--tableHost", "127.0.0.1",
		"--location", filepath.Join(a.Dir, "data"), "--silent",
		"--skipApiVersionCheck", "--loose", "--disableTelemetry")
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		_ = logf.Close()
		return fmt.Errorf("bench: azurite: %w", err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("bench: start azurite: %w", err)
	}
	listening := make(chan struct{})
	exited := make(chan struct{})
	go func() {
		// Copies Azurite's output to its log until it exits, and says when
		// both services listen.
		defer close(exited)
		defer func() { _ = logf.Close() }() // Azurite's log; nothing to do if closing it fails
		sc := bufio.NewScanner(out)
		queue, table, said := false, false, false
		for sc.Scan() {
			line := sc.Text()
			fmt.Fprintln(logf, line)
			if said || !strings.Contains(line, "successfully listening") {
				continue
			}
			queue = queue || strings.Contains(line, "Queue service")
			table = table || strings.Contains(line, "Table service")
			if queue && table {
				said = true
				close(listening)
			}
		}
	}()
	done := make(chan struct{})
	go func() {
		<-exited
		_ = cmd.Wait()
		close(done)
	}()
	t := time.NewTimer(azuriteStartTimeout)
	defer t.Stop()
	select {
	case <-listening:
	case <-done:
		return fmt.Errorf("bench: azurite exited before listening (see %s)", a.log)
	case <-t.C:
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("bench: azurite did not listen within %s (see %s)", azuriteStartTimeout, a.log)
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		<-done
		return ctx.Err()
	}
	a.proc, a.done = cmd, done
	return nil
}

// Pid is the running Azurite's process id (0 when stopped).
func (a *Azurite) Pid() int {
	if a.proc == nil || a.proc.Process == nil {
		return 0
	}
	return a.proc.Process.Pid
}

// PeakRSS is the largest resident set of the Azurite processes so far, in bytes.
func (a *Azurite) PeakRSS() int64 {
	if pid := a.Pid(); pid != 0 {
		return max(a.peak, vmHWM(pid))
	}
	return a.peak
}

// Stop ends Azurite gracefully (SIGTERM: it saves its database), killing it
// if it does not exit within 30 s.
func (a *Azurite) Stop() error {
	if a.proc == nil {
		return nil
	}
	a.peak = max(a.peak, vmHWM(a.proc.Process.Pid))
	_ = a.proc.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(azuriteStopTimeout)
	defer t.Stop()
	var err error
	select {
	case <-a.done:
	case <-t.C:
		_ = a.proc.Process.Kill()
		<-a.done
		err = errors.New("bench: azurite did not stop within 30s and was killed")
	}
	a.peak = max(a.peak, maxRSS(a.proc.ProcessState))
	a.proc, a.done = nil, nil
	return err
}

// Restart stops Azurite gracefully and starts it again on the same ports
// and data folder.
func (a *Azurite) Restart(ctx context.Context) error {
	if err := a.Stop(); err != nil {
		return err
	}
	return a.start(ctx)
}

// freePorts returns n TCP ports that were free a moment ago on 127.0.0.1.
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			_ = ln.Close()
		}
	}()
	ports := make([]int, 0, n)
	for range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("bench: free port: %w", err)
		}
		lns = append(lns, ln)
		ports = append(ports, ln.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}
