// Command natlab is the NAT traversal lab and diagnostic tool.
package main

import (
	"os"

	"github.com/natlab/natlab/cmd"
)

func main() {
	os.Exit(cmd.Main(os.Args[1:], cmd.SystemStreams()))
}
