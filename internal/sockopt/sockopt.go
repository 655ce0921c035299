// Package sockopt holds the socket options natlab sets through a
// net.Dialer's or net.ListenConfig's Control function, one file per
// platform family.
package sockopt
