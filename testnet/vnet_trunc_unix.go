//go:build unix

package testnet

import "syscall"

// msgTrunc is the flag ReadMsgUDP sets when a datagram did not fit: the
// emulated socket reports it as this system's kernel would.
const msgTrunc = syscall.MSG_TRUNC
