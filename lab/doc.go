// Package lab runs natlab against emulated networks: Run profiles every
// site of a lab and compares each profile with its preset, RunMatrix
// pairs every preset with every other and runs the paired probe in each
// cell, and RunPair runs both probes of one two-site lab. It starts
// natlab's own server (STUN, rendezvous, TURN) on the lab's server host
// (StartServer, TURNConfig, RelayConfig). Run and RunMatrix report
// progress through an Events hook: their plan first, then each site or
// cell as it finishes. Up, Hold, Find, ExecCommand and Down keep a
// kernel lab running between commands (Linux only).
//
// The dependencies read cmd → lab → {probe, server, testnet}: the agent
// (probe) that runs on users' hosts knows nothing of the lab.
package lab
