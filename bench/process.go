package bench

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// stopTimeout bounds a graceful stop (SIGTERM) before the process is killed.
const stopTimeout = 45 * time.Second

// process is one daemon (dispatcher or worker) run from its binary with an
// environment, restartable, remembering its peak memory across runs.
type process struct {
	name string
	bin  string
	env  []string
	log  string // file receiving stdout and stderr (appended across restarts)

	cmd  *exec.Cmd
	done chan struct{}
	peak int64 // peak RSS of earlier runs, bytes
	runs int
}

func (p *process) start() error {
	if p.cmd != nil {
		return fmt.Errorf("bench: start %s: already running", p.name)
	}
	logf, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("bench: start %s: %w", p.name, err)
	}
	cmd := exec.Command(p.bin)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// The daemons die with the harness, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close()
		return fmt.Errorf("bench: start %s: %w", p.name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	p.runs++
	return nil
}

// running reports whether the process is up.
func (p *process) running() bool {
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// exited says why the process is no longer running, if it is not.
func (p *process) exited() error {
	if p.cmd == nil || p.running() {
		return nil
	}
	return fmt.Errorf("%s exited: %s (see %s)", p.name, p.cmd.ProcessState, p.log)
}

// kill ends the process with SIGKILL (a crash) and waits for it.
func (p *process) kill() error {
	if p.cmd == nil {
		return fmt.Errorf("bench: kill %s: not running", p.name)
	}
	p.peak = max(p.peak, vmHWM(p.cmd.Process.Pid))
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.reap()
	return nil
}

// stop ends the process with SIGTERM (a graceful shutdown) and waits for
// it, killing it after stopTimeout.
func (p *process) stop() error {
	if p.cmd == nil {
		return nil
	}
	p.peak = max(p.peak, vmHWM(p.cmd.Process.Pid))
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(stopTimeout)
	defer t.Stop()
	var err error
	select {
	case <-p.done:
	case <-t.C:
		_ = p.cmd.Process.Kill()
		<-p.done
		err = fmt.Errorf("bench: %s did not stop within %s and was killed", p.name, stopTimeout)
	}
	p.reap()
	return err
}

func (p *process) reap() {
	p.peak = max(p.peak, maxRSS(p.cmd.ProcessState))
	p.cmd, p.done = nil, nil
}

// peakRSS is the largest resident set of the process so far (all its runs), in bytes.
func (p *process) peakRSS() int64 {
	if p.cmd != nil {
		return max(p.peak, vmHWM(p.cmd.Process.Pid))
	}
	return p.peak
}

// vmHWM reads a live process's peak resident set (VmHWM) in bytes; 0 if it
// cannot be read.
func vmHWM(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }() // read only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return parseKB(v)
		}
	}
	return 0
}

// parseKB reads "   123456 kB" as bytes.
func parseKB(v string) int64 {
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return 0
	}
	n, err := strconv.ParseInt(fields[0], 10, 64)
	if err != nil {
		return 0
	}
	return n << 10
}

// maxRSS is an exited process's peak resident set in bytes (Linux reports
// ru_maxrss in KiB).
func maxRSS(ps *os.ProcessState) int64 {
	if ps == nil {
		return 0
	}
	if ru, ok := ps.SysUsage().(*syscall.Rusage); ok && ru != nil {
		return ru.Maxrss << 10
	}
	return 0
}
