//go:build freebsd || netbsd || openbsd || dragonfly

package portmap

// rtfIfscope: the other BSDs have no interface-scoped routes.
const rtfIfscope = 0
