//go:build linux

package lab

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"syscall"
	"time"

	"github.com/natlab/natlab/internal/buildinfo"
	"github.com/natlab/natlab/internal/millis"
	"github.com/natlab/natlab/testnet"
)

// Timeouts of a held lab, each with why.
const (
	// upReadyTimeout bounds waiting for the holding process to report the
	// lab built: a kernel lab takes tens of milliseconds, miniupnpd and
	// the delay lines a few hundred.
	upReadyTimeout = 30 * time.Second
	// downTimeout bounds waiting for the holding process to tear the lab
	// down after SIGTERM.
	downTimeout = 10 * time.Second
)

// HoldOptions configure Hold.
type HoldOptions struct {
	Topology testnet.Topology
}

// Hold builds a kernel lab with natlab's server in it, records its State
// next to its lock, calls ready with it and keeps the lab (its delay
// lines, miniupnpd and server run in this process) until ctx ends; then
// it tears everything down.
func Hold(ctx context.Context, o HoldOptions, ready func(State) error) error {
	l, err := testnet.Start(ctx, o.Topology, testnet.Kernel)
	if err != nil {
		return fmt.Errorf("start kernel lab: %w", err)
	}
	defer l.Close()
	logf, err := os.OpenFile(testnet.LogPath(l.ID), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("lab log: %w", err)
	}
	defer logf.Close()
	srv, err := StartServer(l, slog.New(slog.NewTextHandler(logf, nil)))
	if err != nil {
		return err
	}
	defer srv.Close()
	st := State{Schema: UpSchema, NatlabVersion: buildinfo.Version(), Name: l.ID, Backend: string(l.Backend), PID: os.Getpid(),
		Namespaces: map[string]string{"server": l.Server.Namespace}}
	for _, s := range srv.Addrs().Sockets() {
		st.Server = append(st.Server, s.String())
	}
	for _, s := range l.Sites {
		st.Sites = append(st.Sites, StateSite{Name: s.Spec.Name, Preset: s.Spec.Preset, Host: s.Host.Addr().String(),
			Public: s.Public.String(), DelayMS: millis.Of(s.Spec.WAN.Delay), Loss: s.Spec.WAN.Loss})
		st.Namespaces[s.Spec.Name] = s.Host.Namespace
	}
	b, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if err := os.WriteFile(testnet.StatePath(l.ID), b, 0o644); err != nil {
		return fmt.Errorf("lab state: %w", err)
	}
	if err := ready(st); err != nil {
		return err
	}
	<-ctx.Done()
	return nil
}

// holdReply is the one line the holding process writes to its parent.
type holdReply struct {
	State *State `json:"state,omitempty"`
	Error string `json:"error,omitempty"`
}

// WriteReady is Hold's ready for a holding process started by Up: it
// writes the state to w (the parent's pipe) as one line.
func WriteReady(w io.Writer) func(State) error {
	return func(st State) error {
		return json.NewEncoder(w).Encode(holdReply{State: &st})
	}
}

// WriteFailed reports a failed Hold to the parent.
func WriteFailed(w io.Writer, err error) {
	_ = json.NewEncoder(w).Encode(holdReply{Error: err.Error()})
}

// Up starts argv (a natlab process that runs Hold with WriteReady on its
// standard output) detached in its own session, waits until it reports
// the lab built and returns the lab's State. The process outlives the
// caller; Down ends it.
func Up(ctx context.Context, argv []string) (State, error) {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true} // no terminal, no SIGHUP, its own process group
	out, err := cmd.StdoutPipe()
	if err != nil {
		return State{}, err
	}
	if err := cmd.Start(); err != nil {
		return State{}, fmt.Errorf("start the lab's process: %w", err)
	}
	type result struct {
		r   holdReply
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var r holdReply
		line, err := bufio.NewReader(out).ReadBytes('\n')
		if err == nil {
			err = json.Unmarshal(line, &r)
		}
		ch <- result{r, err}
	}()
	ctx, cancel := context.WithTimeout(ctx, upReadyTimeout)
	defer cancel()
	select {
	case res := <-ch:
		switch {
		case res.err != nil:
			_ = cmd.Wait()
			return State{}, fmt.Errorf("the lab's process ended without reporting: %w", res.err)
		case res.r.State == nil:
			_ = cmd.Wait()
			return State{}, errors.New(res.r.Error)
		}
		// The process lives on; release it so that it is not a zombie
		// of ours when we exit (init reaps it).
		_ = cmd.Process.Release()
		return *res.r.State, nil
	case <-ctx.Done():
		_ = cmd.Process.Signal(syscall.SIGTERM)
		_ = cmd.Wait()
		return State{}, fmt.Errorf("the lab's process did not report within %v: %w", upReadyTimeout, ctx.Err())
	}
}

// Find returns the State of the live lab name.
func Find(name string) (State, error) {
	if err := testnet.CheckID(name); err != nil {
		return State{}, err
	}
	b, err := os.ReadFile(testnet.StatePath(name))
	if errors.Is(err, os.ErrNotExist) || (err == nil && !testnet.Live(name)) {
		return State{}, fmt.Errorf("lab %s: %w (`natlab lab up` prints the names; `natlab lab clean` removes crashed ones)", name, testnet.ErrNoLab)
	}
	if err != nil {
		return State{}, err
	}
	var st State
	if err := json.Unmarshal(b, &st); err != nil {
		return State{}, fmt.Errorf("lab %s: state: %w", name, err)
	}
	return st, nil
}

// Down ends the process holding lab name and waits until it has torn the
// lab down. A lab whose process died is swept as `natlab lab clean` would.
func Down(ctx context.Context, name string) error {
	if err := testnet.CheckID(name); err != nil {
		return err
	}
	if _, err := os.Stat(testnet.StatePath(name)); err == nil && !testnet.Live(name) {
		_, err := testnet.CleanLab(ctx, name)
		return err
	}
	st, err := Find(name)
	if err != nil {
		return err
	}
	p, err := os.FindProcess(st.PID)
	if err != nil {
		return err
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("lab %s: stop process %d: %w", name, st.PID, err)
	}
	ctx, cancel := context.WithTimeout(ctx, downTimeout)
	defer cancel()
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for testnet.Live(name) || running(st.PID) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("lab %s: process %d still holds it after %v: %w", name, st.PID, downTimeout, ctx.Err())
		case <-t.C:
		}
	}
	if _, err := os.Stat(testnet.StatePath(name)); err == nil {
		// The process was dying already and did not tear the lab down.
		_, err := testnet.CleanLab(ctx, name)
		return err
	}
	return nil
}

// ExecCommand returns the command that runs argv on host ("server" or a
// site name) of lab name, inside its network namespace.
func ExecCommand(ctx context.Context, name, host string, argv []string) (*exec.Cmd, error) {
	st, err := Find(name)
	if err != nil {
		return nil, err
	}
	ns, ok := st.Namespaces[host]
	if !ok {
		return nil, fmt.Errorf("lab %s has no host %q (hosts: server and the sites)", name, host)
	}
	return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", ns}, argv...)...), nil
}

// running reports whether process pid still runs (a zombie does not: the
// holder's parent has exited and whoever reaps orphans may be slow).
func running(pid int) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	// pid (comm) S ...: the state follows the last ')'.
	i := bytes.LastIndexByte(b, ')')
	return i >= 0 && i+2 < len(b) && b[i+2] != 'Z'
}
