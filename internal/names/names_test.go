package names

import "testing"

func TestFew(t *testing.T) {
	tests := map[string]struct {
		items []string
		n     int
		sep   string
		want  string
	}{
		"none":              {n: 3, sep: ", ", want: ""},
		"fewer than n":      {items: []string{"a", "b"}, n: 3, sep: ", ", want: "a, b"},
		"exactly n":         {items: []string{"a", "b", "c"}, n: 3, sep: "; ", want: "a; b; c"},
		"more than n":       {items: []string{"a", "b", "c", "d", "e"}, n: 3, sep: "; ", want: "a; b; c and 2 more"},
		"the usual of List": {items: []string{"a", "b", "c", "d", "e", "f"}, n: Max, sep: ", ", want: "a, b, c, d, e and 1 more"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Few(tc.items, tc.n, tc.sep); got != tc.want {
				t.Errorf("Few = %q, want %q", got, tc.want)
			}
		})
	}
	if got := List([]string{"a", "b", "c", "d", "e", "f"}); got != "a, b, c, d, e and 1 more" {
		t.Errorf("List = %q", got)
	}
}
