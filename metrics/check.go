package metrics

import (
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/natlab/natlab/natclass"
)

// Check metric names; natlab fleet --prometheus reads them back.
const (
	CheckSummaryMetric  = "natlab_check_summary"
	CheckLifetimeMetric = "natlab_check_binding_lifetime_seconds"
	CheckWeightMetric   = "natlab_check_weight"
)

// Lifetime kinds (the "kind" label of CheckLifetimeMetric).
const (
	LifetimeIdle        = "idle"
	LifetimeEstablished = "established"
)

// summaryField is one field of natclass.Summary as a label.
type summaryField struct {
	label string
	index int
	kind  reflect.Kind
}

// summaryFields are natclass.Summary's JSON fields, each exported as a
// label of the same name: whatever the predictor's input gains is
// exported and read back without a change here. The public address
// ("mapped") is left out: it is per host, and the predictor's
// fleet-wide use ignores it.
var summaryFields = func() []summaryField {
	var fs []summaryField
	t := reflect.TypeFor[natclass.Summary]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name == "" || name == "-" || name == "mapped" {
			continue
		}
		fs = append(fs, summaryField{label: name, index: i, kind: t.Field(i).Type.Kind()})
	}
	return fs
}()

// SummaryLabels are the label names of CheckSummaryMetric.
func SummaryLabels() []string {
	names := make([]string, len(summaryFields))
	for i, f := range summaryFields {
		names[i] = f.label
	}
	return names
}

// summaryValues are s's label values, in SummaryLabels order.
func summaryValues(s natclass.Summary) []string {
	v := reflect.ValueOf(s)
	out := make([]string, len(summaryFields))
	for i, f := range summaryFields {
		fv := v.Field(f.index).Interface()
		if scalar(f.kind) {
			out[i] = fmt.Sprint(fv)
			continue
		}
		// Nested values (the TCP profile) travel as their JSON.
		b, err := json.Marshal(fv)
		if err != nil {
			b = []byte("null")
		}
		out[i] = string(b)
	}
	return out
}

func scalar(k reflect.Kind) bool {
	switch k {
	case reflect.String, reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return true
	}
	return false
}

// SummaryFromLabels reads a summary back from CheckSummaryMetric's
// labels.
func SummaryFromLabels(labels map[string]string) (natclass.Summary, error) {
	obj := map[string]any{}
	for _, f := range summaryFields {
		v, ok := labels[f.label]
		if !ok || v == "" {
			continue
		}
		var err error
		switch f.kind {
		case reflect.String:
			obj[f.label] = v
		case reflect.Bool:
			obj[f.label], err = strconv.ParseBool(v)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			obj[f.label], err = strconv.ParseInt(v, 10, 64)
		default:
			obj[f.label] = json.RawMessage(v)
		}
		if err != nil {
			return natclass.Summary{}, fmt.Errorf("label %s=%q: %w", f.label, v, err)
		}
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return natclass.Summary{}, err
	}
	var s natclass.Summary
	if err := json.Unmarshal(b, &s); err != nil {
		return natclass.Summary{}, fmt.Errorf("summary labels: %w", err)
	}
	return s, nil
}

// Check exports the profile of `natlab check --interval --metrics`: the
// predictor's input (one series of value 1, its fields as labels), the
// binding lifetimes and the host's weight, so natlab fleet --prometheus
// can read a whole deployment back.
type Check struct {
	summary  *prometheus.GaugeVec
	lifetime *prometheus.GaugeVec
	weight   prometheus.Gauge
	runs     *prometheus.CounterVec
	last     prometheus.Gauge
	duration prometheus.Gauge
	now      func() time.Time
}

// NewCheck registers the check metrics on reg; weight is the users or
// traffic behind this host (natlab fleet's "weight").
func NewCheck(reg prometheus.Registerer, weight float64) *Check {
	c := &Check{
		summary: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: CheckSummaryMetric,
			Help: "This host's NAT as natlab's predictor sees it (value 1): the last check's summary fields as labels."}, SummaryLabels()),
		lifetime: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: CheckLifetimeMetric,
			Help: "How long an idle UDP mapping survived: after one request (idle) or after traffic both ways (established)."}, []string{"kind"}),
		weight: prometheus.NewGauge(prometheus.GaugeOpts{Name: CheckWeightMetric,
			Help: "The users or traffic behind this host, for natlab fleet."}),
		runs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "natlab_check_runs_total",
			Help: "Checks by result: ok, or error (no server answered)."}, []string{"result"}),
		last: prometheus.NewGauge(prometheus.GaugeOpts{Name: "natlab_check_last_run_timestamp_seconds",
			Help: "When the last check ended (Unix time)."}),
		duration: prometheus.NewGauge(prometheus.GaugeOpts{Name: "natlab_check_last_run_duration_seconds",
			Help: "Wall time of the last successful check."}),
		now: time.Now,
	}
	reg.MustRegister(c.summary, c.lifetime, c.weight, c.runs, c.last, c.duration)
	c.weight.Set(weight)
	for _, r := range []string{"ok", "error"} {
		c.runs.WithLabelValues(r)
	}
	return c
}

// Observe records one finished check: s is its summary (probe.HostSummary).
func (c *Check) Observe(s natclass.Summary, p *natclass.Profile) {
	c.last.Set(float64(c.now().UnixNano()) / 1e9)
	c.runs.WithLabelValues("ok").Inc()
	c.duration.Set(p.DurationMillis / 1000)
	// One series only: the NAT may have changed since the last check.
	c.summary.Reset()
	c.summary.WithLabelValues(summaryValues(s)...).Set(1)
	for kind, v := range map[string]*float64{LifetimeIdle: p.BindingLifetimeS, LifetimeEstablished: p.EstablishedLifetimeS} {
		if v != nil {
			c.lifetime.WithLabelValues(kind).Set(*v)
		}
	}
}

// ObserveError records a check that failed.
func (c *Check) ObserveError() {
	c.last.Set(float64(c.now().UnixNano()) / 1e9)
	c.runs.WithLabelValues("error").Inc()
}
