// Package promtest scrapes a Prometheus endpoint over HTTP for tests and
// reads the exposition format with the Prometheus project's own parser.
package promtest

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Scrape is one scrape: the metric families by name, and the text.
type Scrape struct {
	Families map[string]*dto.MetricFamily
	Text     string
}

// Get scrapes url (http://HOST:PORT/metrics) in the text format.
func Get(ctx context.Context, url string) (*Scrape, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/plain; version=0.0.4")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s: %s", url, resp.Status, b)
	}
	return Parse(string(b))
}

// Parse reads a scrape in the text exposition format.
func Parse(text string) (*Scrape, error) {
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		return nil, err
	}
	return &Scrape{Families: fams, Text: text}, nil
}

// Has reports whether the scrape holds the family name.
func (s *Scrape) Has(name string) bool { _, ok := s.Families[name]; return ok }

// Value sums the samples of name (a counter, a gauge, or a histogram's
// or summary's count) whose labels include those given as name, value
// pairs.
func (s *Scrape) Value(name string, labels ...string) float64 {
	f := s.Families[name]
	if f == nil {
		return 0
	}
	sum := 0.0
	for _, m := range f.Metric {
		if !match(m, labels) {
			continue
		}
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		case m.Summary != nil:
			sum += float64(m.Summary.GetSampleCount())
		case m.Untyped != nil:
			sum += m.Untyped.GetValue()
		}
	}
	return sum
}

// LabelValues lists the values label takes in the samples of name.
func (s *Scrape) LabelValues(name, label string) []string {
	seen := map[string]bool{}
	if f := s.Families[name]; f != nil {
		for _, m := range f.Metric {
			for _, l := range m.Label {
				if l.GetName() == label {
					seen[l.GetValue()] = true
				}
			}
		}
	}
	var out []string
	for v := range seen {
		out = append(out, v)
	}
	sort.Strings(out)
	return out
}

func match(m *dto.Metric, labels []string) bool {
	for i := 0; i+1 < len(labels); i += 2 {
		found := false
		for _, l := range m.Label {
			if l.GetName() == labels[i] && l.GetValue() == labels[i+1] {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// Names lists the families of the scrape, with their types, one a line
// ("convert_disks_total counter"), sorted.
func (s *Scrape) Names() []string {
	var out []string
	for n, f := range s.Families {
		out = append(out, n+" "+strings.ToLower(f.GetType().String()))
	}
	sort.Strings(out)
	return out
}
