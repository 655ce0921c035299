//go:build linux

package testnet

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

const (
	// daemonReadyTimeout bounds a lab daemon's start (miniupnpd, tayga,
	// unbound): each is up in milliseconds; a loaded CI machine gets slack.
	daemonReadyTimeout = 10 * time.Second
	// daemonStopTimeout is how long a daemon may take after SIGTERM (to
	// remove its rules, say) before it is killed.
	daemonStopTimeout = 2 * time.Second
	// daemonPoll is how often the log is checked during start.
	daemonPoll = 20 * time.Millisecond
)

// labDaemon is a program the lab runs inside a namespace.
type labDaemon struct {
	name, ns, log string
	cmd           *exec.Cmd
	done          chan struct{} // closed when the process has been waited for
}

// startDaemon runs bin in ns in the foreground, its output in dir, and
// waits until its log holds every line of ready. It is registered for
// teardown before it starts, so a failure at any later point stops it.
func (b *kernelBuilder) startDaemon(ns, dir string, ready []string, bin string, args ...string) error {
	d := &labDaemon{name: filepath.Base(bin), ns: ns, log: filepath.Join(dir, filepath.Base(bin)+".log")}
	b.k.mu.Lock()
	b.k.stops = append(b.k.stops, d.stop)
	b.k.mu.Unlock()
	logf, err := os.Create(d.log)
	if err != nil {
		return fmt.Errorf("%s log: %w", d.name, err)
	}
	defer logf.Close()
	d.cmd = exec.Command("ip", append([]string{"netns", "exec", ns, bin}, args...)...)
	d.cmd.Stdout, d.cmd.Stderr = logf, logf
	// If this process dies without tearing the lab down, the kernel kills
	// the daemon too (`ip netns exec` execs it, keeping the signal).
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	started := make(chan error, 1)
	d.done = make(chan struct{})
	go func() {
		defer close(d.done)
		// Pdeathsig fires when the thread that started the child ends:
		// keep this goroutine, and its thread, until the child exits.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		if err := d.cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		_ = d.cmd.Wait()
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("start %s in %s: %w", d.name, ns, err)
	}
	return d.waitFor(b.ctx, ready)
}

// waitFor polls the daemon's log until it holds every line of ready.
func (d *labDaemon) waitFor(ctx context.Context, ready []string) error {
	deadline := time.NewTimer(daemonReadyTimeout)
	defer deadline.Stop()
	tick := time.NewTicker(daemonPoll)
	defer tick.Stop()
	for {
		out, _ := os.ReadFile(d.log)
		if containsAll(string(out), ready) {
			return nil
		}
		select {
		case <-d.done:
			return fmt.Errorf("%s in %s exited during start:\n%s", d.name, d.ns, tail(out))
		case <-deadline.C:
			return fmt.Errorf("%s in %s not ready after %v:\n%s", d.name, d.ns, daemonReadyTimeout, tail(out))
		case <-ctx.Done():
			return fmt.Errorf("%s in %s: %w", d.name, d.ns, ctx.Err())
		case <-tick.C:
		}
	}
}

func containsAll(s string, subs []string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}

// stop ends the daemon: SIGTERM, then SIGKILL.
func (d *labDaemon) stop() error {
	if d.cmd == nil || d.cmd.Process == nil || d.done == nil {
		return nil
	}
	_ = d.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-d.done:
	case <-time.After(daemonStopTimeout):
		_ = d.cmd.Process.Kill()
		<-d.done
	}
	return nil
}

// tail is the end of a log, for error messages.
func tail(b []byte) string {
	const keep = 2000
	if len(b) > keep {
		b = b[len(b)-keep:]
	}
	return string(b)
}
