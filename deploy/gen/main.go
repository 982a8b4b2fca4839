// Command gen writes the configuration reference (docs/configuration.md)
// from the daemons' config structs:
//
//	go run ./deploy/gen -o docs/configuration.md
//
// Without -o it writes to standard output. A test in package deploy fails
// when the committed file differs from what this prints.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/cpvrefresh/cpvrefresh/deploy"
)

func main() {
	out := flag.String("o", "", "file to write (default: standard output)")
	flag.Parse()
	text := deploy.ConfigurationReference()
	if *out == "" {
		fmt.Print(text)
		return
	}
	if err := os.WriteFile(*out, []byte(text), 0o644); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}
