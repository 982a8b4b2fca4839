package stack

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

// Process is one program of the stack (a daemon, the simulator) run from
// its binary with arguments and an environment on top of this process's,
// restartable, remembering its peak memory across runs. Its methods are not
// safe for concurrent use.
type Process struct {
	Name string
	Bin  string
	Args []string
	// Env is added to this process's environment; a later KEY=value wins
	// over an earlier one.
	Env []string
	// Log receives stdout and stderr, appended across restarts.
	Log string

	cmd  *exec.Cmd
	done chan struct{}
	peak int64 // peak RSS of earlier runs, bytes
}

// Start starts the process.
func (p *Process) Start() error {
	if p.cmd != nil {
		return fmt.Errorf("stack: start %s: already running", p.Name)
	}
	logf, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("stack: start %s: %w", p.Name, err)
	}
	cmd := exec.Command(p.Bin, p.Args...)
	cmd.Env = append(os.Environ(), p.Env...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// It dies with this process, whatever happens to it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		_ = logf.Close() // the process's log: nothing to do about a failed close
		return fmt.Errorf("stack: start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		_ = logf.Close()
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

// Running reports whether the process is up.
func (p *Process) Running() bool {
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

// Exited says why the process is no longer running, if it ended without
// being stopped.
func (p *Process) Exited() error {
	if p.cmd == nil || p.Running() {
		return nil
	}
	tail := strings.Join(LastLines(p.Log, 5, nil), "\n  ")
	if tail == "" {
		return fmt.Errorf("%s exited: %s (see %s)", p.Name, p.cmd.ProcessState, p.Log)
	}
	return fmt.Errorf("%s exited: %s (see %s); its log ends:\n  %s", p.Name, p.cmd.ProcessState, p.Log, tail)
}

// LastLines is the last n non-empty lines of the log at path that keep
// accepts (every one when keep is nil); none if the log cannot be read. Without keep, it is what a daemon said as it
// ended: its exit report is the last line, and not a structured record.
func LastLines(path string, n int, keep func(line string) bool) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var lines []string
	for _, l := range strings.Split(string(data), "\n") {
		if l = strings.TrimSpace(l); l != "" && (keep == nil || keep(l)) {
			lines = append(lines, l)
		}
	}
	return lines[max(0, len(lines)-n):]
}

// Kill ends the process with SIGKILL (a crash) and waits for it.
func (p *Process) Kill() error {
	if p.cmd == nil {
		return fmt.Errorf("stack: kill %s: not running", p.Name)
	}
	p.peak = max(p.peak, PeakRSS(p.cmd.Process.Pid))
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
	p.reap()
	return nil
}

// Stop ends the process with SIGTERM (a graceful shutdown) and waits for
// it, killing it after 45 s.
func (p *Process) Stop() error {
	if p.cmd == nil {
		return nil
	}
	p.peak = max(p.peak, PeakRSS(p.cmd.Process.Pid))
	var err error
	if terminate(p.cmd.Process.Pid, p.done, stopTimeout) {
		err = fmt.Errorf("stack: %s did not stop within %s and was killed", p.Name, stopTimeout)
	}
	p.reap()
	return err
}

// terminate sends SIGTERM to pid (a negative pid: its process group) and
// waits until done is closed, sending SIGKILL after timeout; it reports
// whether it had to kill.
func terminate(pid int, done <-chan struct{}, timeout time.Duration) (killed bool) {
	_ = syscall.Kill(pid, syscall.SIGTERM)
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-done:
		return false
	case <-t.C:
		_ = syscall.Kill(pid, syscall.SIGKILL)
		<-done
		return true
	}
}

func (p *Process) reap() {
	p.peak = max(p.peak, maxRSS(p.cmd.ProcessState))
	p.cmd, p.done = nil, nil
}

// PeakRSS is the largest resident set of the process so far (all its runs
// since ForgetPeak), in bytes.
func (p *Process) PeakRSS() int64 {
	if p.cmd != nil {
		return max(p.peak, PeakRSS(p.cmd.Process.Pid))
	}
	return p.peak
}

// CPUTime is the CPU time (user and system) the running process has used
// so far; 0 when it is not running.
func (p *Process) CPUTime() time.Duration {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return CPUTime(p.cmd.Process.Pid)
}

// ForgetPeak forgets the memory peaks of the earlier runs.
func (p *Process) ForgetPeak() { p.peak = 0 }

// PeakRSS reads a live process's peak resident set (VmHWM) in bytes; 0 if
// it cannot be read.
func PeakRSS(pid int) int64 {
	f, err := os.Open("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0
	}
	defer func() { _ = f.Close() }() // opened read-only
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return parseKB(v)
		}
	}
	return 0
}

// clockTicks is the unit of /proc/<pid>/stat's times (USER_HZ, 100 on
// every Linux architecture Go supports).
const clockTicks = 100

// CPUTime reads a live process's CPU time (utime + stime of
// /proc/<pid>/stat); 0 if it cannot be read.
func CPUTime(pid int) time.Duration {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name (field 2) may hold spaces: fields count from after
	// its closing parenthesis, where field 3 (state) is the first.
	_, rest, ok := strings.Cut(string(b), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	return time.Duration(utime+stime) * time.Second / clockTicks
}

// MachineCPU reads the CPU time every core of the machine has spent busy
// (the first line of /proc/stat: user, nice, system, irq, softirq and
// steal; idle and iowait left out); 0 if it cannot be read.
func MachineCPU() time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 9 || f[0] != "cpu" {
		return 0
	}
	var busy int64
	for _, i := range []int{1, 2, 3, 6, 7, 8} { // user nice system (idle iowait) irq softirq steal
		n, err := strconv.ParseInt(f[i], 10, 64)
		if err != nil {
			return 0
		}
		busy += n
	}
	return time.Duration(busy) * time.Second / clockTicks
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
