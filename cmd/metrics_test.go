package cmd

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/natlab/natlab/probe"
	"github.com/natlab/natlab/rendezvous"
)

func TestRoundCode(t *testing.T) {
	base, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	a, b := roundCode(base, 42), roundCode(strings.ToUpper(strings.ReplaceAll(base, "-", "")), 42)
	if a != b {
		t.Errorf("the same code written differently gives %q and %q", a, b)
	}
	if _, err := rendezvous.NormalizeCode(a); err != nil {
		t.Errorf("round code %q is not a valid pairing code: %v", a, err)
	}
	if roundCode(base, 43) == a {
		t.Error("consecutive slots share a code: the server would refuse the second pairing")
	}
	slot, end := intervalSlot(time.Unix(125, 0), time.Minute)
	if slot != 2 || !end.Equal(time.Unix(180, 0)) {
		t.Errorf("intervalSlot = %d, %v", slot, end)
	}
}

var metricsURLRE = regexp.MustCompile(`serving metrics on (\S+)`)

// TestProbeIntervalMetrics runs two `natlab probe --interval` in the
// in-process lab: they re-pair every round on the shared code, print one
// report line per round, serve metrics, and stop cleanly when cancelled.
func TestProbeIntervalMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: two rounds take up to 15 s")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := labProbes(t, ctx, "full-cone", "symmetric")
	code, err := rendezvous.NewCode()
	if err != nil {
		t.Fatal(err)
	}
	rctx, stop := context.WithCancel(ctx)
	defer stop()
	type res struct {
		out, errOut *syncBuffer
		err         error
	}
	results := make(chan res, 2)
	firstErr := &syncBuffer{}
	for site, extra := range [][]string{{"--metrics", "127.0.0.1:0"}, nil} {
		out, errOut := &syncBuffer{}, &syncBuffer{}
		if site == 0 {
			errOut = firstErr
		}
		go func() {
			err := run(rctx, site, out, errOut, append([]string{"--interval", "5s", "--code", code, "--pair-timeout", "30s"}, extra...)...)
			results <- res{out, errOut, err}
		}()
	}
	// The first probe prints its metrics URL at once.
	var url string
	deadline := time.Now().Add(30 * time.Second)
	for url == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no metrics URL printed:\n%s", firstErr.String())
		}
		time.Sleep(50 * time.Millisecond)
		if m := metricsURLRE.FindStringSubmatch(firstErr.String()); m != nil {
			url = m[1]
		}
	}
	rounds := func() (direct float64, text string) {
		resp, err := http.Get(url)
		if err != nil {
			return -1, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		m := regexp.MustCompile(`(?m)^natlab_probe_rounds_total\{result="direct"\} (\S+)$`).FindStringSubmatch(string(b))
		if m == nil {
			return -1, string(b)
		}
		var v float64
		_ = json.Unmarshal([]byte(m[1]), &v)
		return v, string(b)
	}
	deadline = time.Now().Add(90 * time.Second)
	var text string
	for {
		n, tx := rounds()
		text = tx
		if n >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("fewer than two direct rounds:\n%s", text)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for _, want := range []string{`natlab_probe_direct_success{technique="udp"} 1`, `natlab_probe_nat_info{filtering="endpoint-independent",mapping="endpoint-independent",nat_type="full-cone",side="self"} 1`,
		"natlab_probe_time_to_direct_seconds_count 2", "natlab_probe_direct_rtt_seconds"} {
		if !strings.Contains(text, want) {
			t.Errorf("metrics lack %q:\n%s", want, text)
		}
	}
	stop()
	for range 2 {
		select {
		case r := <-results:
			if r.err != nil {
				t.Errorf("probe --interval stopped with %v\n%s", r.err, r.errOut.String())
			}
			lines := strings.Split(strings.TrimSpace(r.out.String()), "\n")
			if len(lines) < 2 {
				t.Errorf("%d report lines, want one per round:\n%s", len(lines), r.out.String())
			}
			for _, l := range lines {
				if rep := checkReport(t, []byte(l)); rep.Schema != probe.ProbeSchema {
					t.Errorf("line %q is not a report", l)
				}
			}
		case <-time.After(10 * time.Second):
			t.Fatal("probe --interval did not stop on cancel")
		}
	}
}

func TestProbeMonitoringFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		err  string // "" for accepted
	}{
		{[]string{"--server", "127.0.0.1:3478", "--interval", "1m", "--metrics", "127.0.0.1:9100"}, ""},
		{[]string{"--server", "127.0.0.1:3478", "--interval", "1s"}, "--interval 1s: want at least 5s"},
		{[]string{"--server", "127.0.0.1:3478", "--metrics", "127.0.0.1:9100"}, "--metrics needs --interval"},
	} {
		var got *ProbeOptions
		cmd := NewCmdProbe(IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: io.Discard}, func(_ context.Context, o *ProbeOptions) error {
			got = o
			return nil
		})
		cmd.SetArgs(c.args)
		cmd.SetOut(io.Discard)
		cmd.SetErr(io.Discard)
		err := cmd.Execute()
		switch {
		case c.err == "" && (err != nil || got == nil || got.Interval != time.Minute || got.Metrics != "127.0.0.1:9100"):
			t.Errorf("%v: %v, %+v", c.args, err, got)
		case c.err != "":
			var fe *FlagError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error %v, want a FlagError containing %q", c.args, err, c.err)
			}
		}
	}
}
