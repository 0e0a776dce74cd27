// Package names shortens lists of names for messages: status and Events stay readable, and
// small, in a cluster with thousands of pods. Every message that lists names goes through it, so
// they all read the same way.
package names

import (
	"fmt"
	"strings"
)

// Max is how many names a message lists unless it says otherwise.
const Max = 5

// List is Few with the usual length and separator: "a, b, c, d, e and 3 more".
func List(items []string) string { return Few(items, Max, ", ") }

// Few lists the first n items joined by sep, then how many more there are.
func Few(items []string, n int, sep string) string {
	if len(items) <= n {
		return strings.Join(items, sep)
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:n], sep), len(items)-n)
}
