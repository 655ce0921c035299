package rendezvous_test

import (
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/natlab/natlab/rendezvous"
)

// BenchmarkHandleFullTable is one message to a registry holding
// MaxPairings pairings (a full table slowed every message 5-fold when
// each message swept the whole table, issue 11).
func BenchmarkHandleFullTable(b *testing.B) {
	reg := rendezvous.NewRegistryLimits(nil, rendezvous.Limits{Rate: -1, PairingsPerSource: -1})
	tok := strings.Repeat("ab", 16)
	code := func(i int) string {
		return strings.NewReplacer("0", "a", "1", "b", "8", "c", "9", "d").Replace(fmt.Sprintf("%016d", i))
	}
	from := netip.MustParseAddrPort("198.51.100.1:1000")
	for i := range rendezvous.MaxPairings {
		m, _ := rendezvous.EncodeRequest(rendezvous.Message{Type: rendezvous.TypeCreate, Code: code(i), Token: tok})
		reg.Handle(m, from)
	}
	if n := reg.Stats().Pairings; n != rendezvous.MaxPairings {
		b.Fatalf("%d pairings", n)
	}
	m, _ := rendezvous.EncodeRequest(rendezvous.Message{Type: rendezvous.TypeCreate, Code: code(5), Token: tok})
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		reg.Handle(m, from)
	}
}
