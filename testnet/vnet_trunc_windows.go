package testnet

import "golang.org/x/sys/windows"

// msgTrunc is the flag ReadMsgUDP sets when a datagram did not fit: the
// emulated socket reports it as Winsock would.
const msgTrunc = windows.MSG_TRUNC
