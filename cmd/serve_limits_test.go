package cmd

import (
	"context"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/natlab/natlab/rendezvous"
	"github.com/natlab/natlab/server"
)

func TestServeLimitFlags(t *testing.T) {
	for _, tt := range []struct {
		args    []string
		wantErr string
		check   func(server.Limits, rendezvous.Limits) bool
	}{
		{nil, "", func(s server.Limits, r rendezvous.Limits) bool {
			return s.BindingRate == server.DefaultBindingRate && s.ConnsPerSource == server.DefaultConnsPerSource &&
				r.PairingsPerSource == rendezvous.DefaultPairingsPerSource
		}},
		{[]string{"--binding-rate", "0", "--conns-per-source", "0", "--pairings-per-source", "0"}, "", func(s server.Limits, r rendezvous.Limits) bool {
			return s.BindingRate < 0 && s.ConnsPerSource < 0 && r.PairingsPerSource < 0
		}},
		{[]string{"--turn-rate", "5", "--turn-burst", "7", "--rendezvous-rate", "3"}, "", func(s server.Limits, r rendezvous.Limits) bool {
			return s.TURNRate == 5 && s.TURNBurst == 7 && r.Rate == 3
		}},
		{[]string{"--binding-rate", "-1"}, "--binding-rate", nil},
		{[]string{"--conns-per-source", "-3"}, "--conns-per-source", nil},
		{[]string{"--turn-burst", "x"}, "invalid argument", nil},
	} {
		s, _, _ := testStreams()
		var got *ServeOptions
		c := NewCmdServe(s, func(_ context.Context, o *ServeOptions) error {
			got = o
			return o.Limits.check()
		})
		c.SetArgs(append([]string{"--listen", "127.0.0.1:3478"}, tt.args...))
		c.SetOut(s.Out)
		c.SetErr(s.ErrOut)
		c.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return &FlagError{err} })
		err := c.Execute()
		if tt.wantErr == "" {
			if err != nil || !tt.check(got.Limits.server(), got.Limits.rendezvous()) {
				t.Errorf("%v: %v %+v", tt.args, err, got.Limits)
			}
			continue
		}
		var fe *FlagError
		if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !asFlagError(err, &fe) {
			t.Errorf("%v: err %v, want a flag error containing %q", tt.args, err, tt.wantErr)
		}
	}
}
