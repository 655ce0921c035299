package fleet

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/natlab/natlab/metrics"
)

// hostKey identifies a host among the series: its labels other than
// the metric's own (the summary fields, "kind", the name), e.g.
// instance and job.
func hostKey(m model.Metric, own []string) string {
	var parts []string
	for k, v := range m {
		if k == model.MetricNameLabel || slices.Contains(own, string(k)) {
			continue
		}
		parts = append(parts, string(k)+"="+string(v))
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// query runs an instant query for a vector.
func query(ctx context.Context, api v1.API, q string) (model.Vector, error) {
	res, _, _, err := api.Query(ctx, q, time.Now())
	if err != nil {
		return nil, fmt.Errorf("prometheus query %s: %w", q, err)
	}
	v, ok := res.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("prometheus query %s: got a %s, want a vector", q, res.Type())
	}
	return v, nil
}

// LoadPrometheus reads the fleet from a Prometheus server's HTTP API
// (url is its base, e.g. http://prometheus:9090): every host that
// `natlab check --interval --metrics` exports, with its weight and
// binding lifetimes.
func LoadPrometheus(ctx context.Context, url string, add func(Host) error) error {
	c, err := api.NewClient(api.Config{Address: url})
	if err != nil {
		return fmt.Errorf("prometheus %s: %w", url, err)
	}
	a := v1.NewAPI(c)
	summaries, err := query(ctx, a, metrics.CheckSummaryMetric)
	if err != nil {
		return err
	}
	if len(summaries) == 0 {
		return fmt.Errorf("prometheus %s: no %s series: is natlab check --interval --metrics scraped?", url, metrics.CheckSummaryMetric)
	}
	weights, err := byHost(ctx, a, metrics.CheckWeightMetric, nil)
	if err != nil {
		return err
	}
	lifetimes := map[string]map[string]float64{}
	for _, kind := range []string{metrics.LifetimeEstablished, metrics.LifetimeIdle} {
		q := fmt.Sprintf(`%s{kind=%q}`, metrics.CheckLifetimeMetric, kind)
		if lifetimes[kind], err = byHost(ctx, a, q, []string{"kind"}); err != nil {
			return err
		}
	}
	own := metrics.SummaryLabels()
	for _, s := range summaries {
		labels := map[string]string{}
		for k, v := range s.Metric {
			labels[string(k)] = string(v)
		}
		sum, err := metrics.SummaryFromLabels(labels)
		if err != nil {
			return fmt.Errorf("prometheus series %s: %w", s.Metric, err)
		}
		key := hostKey(s.Metric, own)
		h := Host{Summary: sum, Weight: weights[key]}
		if v, ok := lifetimes[metrics.LifetimeEstablished][key]; ok {
			h.LifetimeS = v
		} else if v, ok := lifetimes[metrics.LifetimeIdle][key]; ok {
			h.LifetimeS = v
		}
		if err := add(h); err != nil {
			return fmt.Errorf("prometheus series %s: %w", s.Metric, err)
		}
	}
	return nil
}

// byHost runs q and keys its values by host.
func byHost(ctx context.Context, a v1.API, q string, own []string) (map[string]float64, error) {
	v, err := query(ctx, a, q)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, s := range v {
		k := hostKey(s.Metric, own)
		if _, dup := out[k]; dup {
			return nil, errors.New("prometheus: two series for one host in " + q)
		}
		out[k] = float64(s.Value)
	}
	return out, nil
}
