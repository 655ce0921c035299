// Package labcheck holds tests that run natlab's STUN server and NAT
// discovery on the testnet lab backends and compare the profiles with what
// each NAT preset should produce.
package labcheck
