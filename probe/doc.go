// Package probe is the agent that runs on a user's host: it profiles the
// host's NAT, pairs with a peer through natlab serve's rendezvous, tries
// every technique with the peer, measures the TURN relay, and returns a
// Report with a Verdict. It emits Events as it goes; views (TUI, text,
// JSON, metrics) render the Report and Events and nothing here knows
// about them. The lab that runs probes on emulated networks is package
// lab, which this package does not import.
package probe
