package portmap

import "golang.org/x/sys/unix"

// rtfIfscope marks macOS's per-interface default routes.
const rtfIfscope = unix.RTF_IFSCOPE
